package wsbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/corework/corework/jobqueue"
)

// chromium returns the path of the browser, or skips the test when there is
// none, unless CI=true, where a missing browser fails it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but no chromium on PATH: install Debian's chromium (apt-get install -y chromium)")
	}
	t.Skip("no chromium on PATH: install Debian's chromium (apt-get install -y chromium) to run the browser test; with CI=true this is a failure")
	return ""
}

// TestBrowser drives chromium through the dashboard: it submits a job with
// the form and sees its result, sees the CPU bars the stats draw, and runs
// the guide's snippet in the page's console scope, line by line as one
// types it, and sees its result message.
func TestBrowser(t *testing.T) {
	path := chromium(t)
	e := newEnv(t, Config{
		Fallback:      Dashboard(),
		StatsInterval: 50 * time.Millisecond,
		SystemStats: func(context.Context) (any, error) {
			return map[string]any{"cpu": 0.6, "cores": []float64{0.3, 0.9}}, nil
		},
	}, jobqueue.Config{}, func(q *jobqueue.Queue) {
		jobqueue.HandleFunc(q, "calcular_fibonacci", func(ctx context.Context, in fibIn) (map[string]int, error) {
			return map[string]int{"n": in.N, "result": fib(in.N)}, nil
		})
	})

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	ctx, cancel := context.WithTimeout(bctx, 45*time.Second)
	defer cancel()

	// The dashboard: connect, submit through the form, see the result.
	err := chromedp.Do(ctx,
		chromedp.Navigate(e.hs.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#conn.up")),
		chromedp.SetValue(chromedp.CSS("#task-type"), "fibonacci"),
		chromedp.SetValue(chromedp.CSS("#data"), `{"n": 20}`),
		chromedp.SetValue(chromedp.CSS("#priority"), "high"),
		chromedp.Click(chromedp.CSS("#submit")),
		chromedp.WaitVisible(chromedp.CSS("#jobs td.state-succeeded")),
	)
	if err != nil {
		t.Fatalf("dashboard job: %v", err)
	}
	result, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#jobs td.result")))
	if err != nil || !strings.Contains(result, `"result":6765`) {
		t.Fatalf("result cell %q, %v", result, err)
	}

	// The CPU panel: one bar per core of the system stats.
	widths, err := chromedp.Run(ctx, chromedp.Poll[[]string](
		`document.querySelectorAll("#cpus .fill").length === 2 &&
		 Array.from(document.querySelectorAll("#cpus .fill"), f => f.style.width)`,
		chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil || strings.Join(widths, ",") != "30%,90%" {
		t.Fatalf("CPU bars %v, %v", widths, err)
	}

	// The guide's snippet, with this server's address, in the page. A hook
	// records what it logs.
	host := strings.TrimPrefix(e.hs.URL, "http://")
	lines := []string{
		`window.logged = []; { const log = console.log; console.log = (...a) => { window.logged.push(a); log(...a); }; }`,
		fmt.Sprintf(`const ws = new WebSocket('ws://%s');`, host),
		`ws.onmessage = (event) => { const data = JSON.parse(event.data); console.log('Recibido:', data); };`,
	}
	for _, l := range lines {
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](l)); err != nil {
			t.Fatalf("evaluate %s: %v", l, err)
		}
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`ws.readyState === WebSocket.OPEN`)); err != nil {
		t.Fatalf("the snippet's socket did not open: %v", err)
	}
	send := `ws.send(JSON.stringify({ command: 'submit_job', task_type: 'calcular_fibonacci', data: { n: 35 } }));`
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](send)); err != nil {
		t.Fatalf("evaluate %s: %v", send, err)
	}
	got, err := chromedp.Run(ctx, chromedp.Poll[json.RawMessage](
		`(window.logged.find(a => a[0] === 'Recibido:' && a[1].type === 'succeeded') || [])[1]`,
		chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		t.Fatalf("no result message logged by the snippet: %v", err)
	}
	var msg struct {
		Type     string         `json:"type"`
		TaskType string         `json:"task_type"`
		Result   map[string]int `json:"result"`
	}
	if err := json.Unmarshal(got, &msg); err != nil || msg.TaskType != "calcular_fibonacci" || msg.Result["result"] != 9227465 {
		t.Fatalf("snippet logged %s (%v)", got, err)
	}
	acks, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.logged.filter(a => a[1].type === 'ack').length`))
	if err != nil || acks != 1 {
		t.Fatalf("snippet logged %d acks (%v), want 1", acks, err)
	}
}
