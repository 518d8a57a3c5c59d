// nullwebhook: a mutating admission webhook that allows every request and patches nothing.
//
// bench_cluster.py registers it beside meshinject's, for a namespace of its own, as the
// floor: what any webhook costs a pod's creation in this API server, on this machine (the
// TLS call, the AdmissionReview encoded and decoded), so the figures for meshinject's can be
// read against it. Standard library only; built by bench_cluster.py with `go build`.
//
//	nullwebhook -listen 127.0.0.1:PORT -cert tls.crt -key tls.key
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
)

type review struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Request    *struct {
		UID string `json:"uid"`
	} `json:"request,omitempty"`
	Response *response `json:"response,omitempty"`
}

type response struct {
	UID     string `json:"uid"`
	Allowed bool   `json:"allowed"`
}

func mutate(w http.ResponseWriter, r *http.Request) {
	var in review
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	out := review{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview",
		Response: &response{UID: in.Request.UID, Allowed: true}}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:26690", "address to serve on")
	cert := flag.String("cert", "tls.crt", "serving certificate (PEM)")
	key := flag.String("key", "tls.key", "its key (PEM)")
	flag.Parse()
	http.HandleFunc("/mutate", mutate)
	log.Fatal(http.ListenAndServeTLS(*listen, *cert, *key, nil))
}
