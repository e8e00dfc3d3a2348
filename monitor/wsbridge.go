package monitor

import (
	"github.com/corework/corework/wsbridge"
	"github.com/prometheus/client_golang/prometheus"
)

// NewWSBridgeCollector returns a Prometheus collector for one WebSocket
// bridge server, reading stats (normally the Server's Stats method) once per
// scrape. Every metric carries the label bridge=name. stats must be safe to
// call from any goroutine and should not block. NewWSBridgeCollector panics
// if stats is nil. It exports:
//
//	corework_wsbridge_connections                          gauge   open now
//	corework_wsbridge_connections_accepted_total           counter upgrades completed
//	corework_wsbridge_connections_rejected_total           counter upgrades refused (origin, auth, handshake, shutdown)
//	corework_wsbridge_messages_in_total                    counter data messages received
//	corework_wsbridge_messages_out_total                   counter messages queued to clients
//	corework_wsbridge_errors_total                         counter error messages sent to clients
//	corework_wsbridge_slow_consumer_closes_total           counter connections closed with 4008
//	corework_wsbridge_protocol_error_closes_total          counter connections closed with 1002, 1003, 1007 or 1009
//	corework_wsbridge_timeouts_total                       counter connections dropped for a missing pong or a write timeout
//	corework_wsbridge_events_dropped_total                 counter non-final job events dropped while the router was behind
//	corework_wsbridge_events_lost_total                    counter times the event subscription broke and was renewed
func NewWSBridgeCollector(name string, stats func() wsbridge.Stats) prometheus.Collector {
	if stats == nil {
		panic("monitor: NewWSBridgeCollector with nil stats")
	}
	l := prometheus.Labels{"bridge": name}
	const g, c = prometheus.GaugeValue, prometheus.CounterValue
	const sub = "wsbridge"
	type S = wsbridge.Stats
	return &statsCollector[S]{stats: stats, metrics: []statMetric[S]{
		newStatMetric(sub, "connections", "WebSocket connections open now.", g, l,
			func(s S) float64 { return float64(s.Connections) }),
		newStatMetric(sub, "connections_accepted_total", "WebSocket upgrades completed.", c, l,
			func(s S) float64 { return float64(s.Accepted) }),
		newStatMetric(sub, "connections_rejected_total", "WebSocket upgrades refused: origin, authorization, bad handshake, shutdown.", c, l,
			func(s S) float64 { return float64(s.Rejected) }),
		newStatMetric(sub, "messages_in_total", "Data messages received from clients.", c, l,
			func(s S) float64 { return float64(s.MessagesIn) }),
		newStatMetric(sub, "messages_out_total", "Messages queued to clients.", c, l,
			func(s S) float64 { return float64(s.MessagesOut) }),
		newStatMetric(sub, "errors_total", "Error messages sent to clients.", c, l,
			func(s S) float64 { return float64(s.Errors) }),
		newStatMetric(sub, "slow_consumer_closes_total", "Connections closed because the client did not read fast enough (4008).", c, l,
			func(s S) float64 { return float64(s.SlowConsumers) }),
		newStatMetric(sub, "protocol_error_closes_total", "Connections closed for a protocol error, a binary or invalid UTF-8 message or an oversized one (1002, 1003, 1007, 1009).", c, l,
			func(s S) float64 { return float64(s.ProtocolErrors) }),
		newStatMetric(sub, "timeouts_total", "Connections dropped for a missing pong or a write timeout.", c, l,
			func(s S) float64 { return float64(s.Timeouts) }),
		newStatMetric(sub, "events_dropped_total", "Non-final job events dropped while the event router was behind.", c, l,
			func(s S) float64 { return float64(s.EventsDropped) }),
		newStatMetric(sub, "events_lost_total", "Times the event router's subscription to the queue broke and was renewed.", c, l,
			func(s S) float64 { return float64(s.EventsLost) }),
	}}
}
