package jobqueue_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/corework/corework/jobqueue"
)

type fuzzInput struct {
	N     int               `json:"n"`
	Name  string            `json:"name"`
	Tags  []string          `json:"tags"`
	Score float64           `json:"score"`
	Meta  map[string]string `json:"meta"`
	Next  *fuzzInput        `json:"next"`
}

// FuzzDecodePayload feeds arbitrary payloads to the typed handler's decoding
// path: it must never panic, must fail only with a permanent ErrBadPayload,
// and what it accepts must survive an encode/decode round trip.
func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{``, `null`, `{}`, `{"n":1,"name":"a","tags":["x"],"score":1.5}`, `{"n":"x"}`,
		`{"n":1} {}`, `[1,2]`, `{"next":{"next":{"n":3}}}`, `{"meta":{"k":"v"}}`, "{\"name\":\"\xff\"}", `1e400`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		v, err := jobqueue.DecodePayload[fuzzInput](payload)
		if err != nil {
			if !errors.Is(err, jobqueue.ErrBadPayload) || !jobqueue.IsPermanent(err) {
				t.Fatalf("error %v is not a permanent ErrBadPayload", err)
			}
			return
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", v, err)
		}
		w, err := jobqueue.DecodePayload[fuzzInput](b)
		if err != nil || !reflect.DeepEqual(v, w) {
			t.Fatalf("round trip of %s: %+v != %+v (%v)", b, v, w, err)
		}
		if _, err := jobqueue.DecodePayload[*fuzzInput](payload); err != nil {
			t.Fatalf("accepted as a value but not as a pointer: %v", err)
		}
	})
}
