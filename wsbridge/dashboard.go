package wsbridge

import (
	"bytes"
	_ "embed"
	"net/http"
	"time"
)

//go:embed dashboard/index.html
var dashboardHTML []byte

// started is the modification time the dashboard is served with.
var started = time.Now()

// Dashboard returns a handler serving the browser dashboard: one page of
// plain HTML, CSS and JavaScript, embedded in the binary, that connects
// back to the WebSocket at its own URL (or at the URL in its "ws" query
// parameter). It shows a job form, the live list of jobs with progress bars
// and results, the queue's figures, and a bar per CPU core drawn from the
// "cores" field of the system stats (see Config.SystemStats: an array of
// usage ratios from 0 to 1). Mount it as Config.Fallback so that the page
// and the WebSocket share a URL, as the guide's client expects:
//
//	wsbridge.New(q, wsbridge.Config{Fallback: wsbridge.Dashboard()})
func Dashboard() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:")
		http.ServeContent(w, r, "index.html", started, bytes.NewReader(dashboardHTML))
	})
}
