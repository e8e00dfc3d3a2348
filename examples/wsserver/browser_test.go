package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
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

// TestBrowser drives chromium through this example's dashboard (the
// wsbridge page it serves): it submits a job with the form and sees its
// result, sees one CPU bar per core from the monitor's stats, and runs the
// guide's snippet in the page's console scope, line by line as one types
// it, and sees its result message.
func TestBrowser(t *testing.T) {
	path := chromium(t)
	const operatorToken = "browser-test-operator-token"
	sctx, stop := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	var out syncBuffer
	go func() {
		done <- run(sctx, &out, config{addr: "127.0.0.1:0", workers: 2, ready: ready, statsTick: 50 * time.Millisecond, operator: operatorToken})
	}()
	defer func() {
		stop()
		<-done
	}()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run ended early: %v", err)
	}
	pageURL := "http://" + addr.String()

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
		chromedp.Navigate(pageURL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#conn.up")),
		chromedp.SetValue(chromedp.CSS("#task-type"), fibType),
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

	// The CPU panel: one bar per core of the monitor's stats, each a
	// percentage width.
	widths, err := chromedp.Run(ctx, chromedp.Poll[[]string](
		`document.querySelectorAll("#cpus .fill").length > 0 &&
		 Array.from(document.querySelectorAll("#cpus .fill"), f => f.style.width)`,
		chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil || len(widths) == 0 {
		t.Fatalf("CPU bars %v, %v", widths, err)
	}
	for _, w := range widths {
		if !strings.HasSuffix(w, "%") {
			t.Fatalf("CPU bar width %q is not a percentage (all: %v)", w, widths)
		}
	}

	// The guide's snippet, with this server's address, in the page. A hook
	// records what it logs.
	host := addr.String()
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
	snippetJob, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.logged.find(a => a[1].type === 'ack')[1].job_id`))
	if err != nil || snippetJob == "" {
		t.Fatalf("the snippet's job id: %q, %v", snippetJob, err)
	}

	// The snippet's socket is a principal of its own: the anonymous page
	// never shows its job, even after reloading its list.
	rowOf := fmt.Sprintf(`document.querySelector('#jobs tr[data-job-id="%s"]') !== null`, snippetJob)
	if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#conn.up")),
		chromedp.WaitVisible(chromedp.CSS("#jobs td.state-succeeded"))); err != nil {
		t.Fatalf("reloading the dashboard: %v", err)
	}
	shown, err := chromedp.Run(ctx, chromedp.Evaluate[bool](rowOf))
	if err != nil || shown {
		t.Fatalf("the anonymous dashboard shows another principal's job %s (%v)", snippetJob, err)
	}

	// The operator URL the server prints shows every job, the snippet's too.
	if err := chromedp.Do(ctx, chromedp.Navigate(pageURL+"/?token="+operatorToken), chromedp.WaitVisible(chromedp.CSS("#conn.up"))); err != nil {
		t.Fatalf("operator dashboard: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](rowOf, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("the operator dashboard does not show job %s: %v", snippetJob, err)
	}
	label, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#conn")))
	if err != nil || !strings.Contains(label, "operator") {
		t.Fatalf("connection label %q, %v", label, err)
	}
}
