// kstatus: print kstatus's verdict (sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute) for Kubernetes objects.
//
//	kstatus FILE.json...   →   one JSON line per file: {"file": ..., "status": ..., "message": ...}
//
// Used by tests/chart/test_health.py on status fixtures recorded from real runs (built by build_kstatus.sh).
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	enc := json.NewEncoder(os.Stdout)
	for _, path := range os.Args[1:] {
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		var obj map[string]interface{}
		if err := utiljson.Unmarshal(data, &obj); err != nil { // whole numbers as int64, as the apiserver
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(2)
		}
		res, err := status.Compute(&unstructured.Unstructured{Object: obj})
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
		_ = enc.Encode(map[string]string{"file": path, "status": res.Status.String(), "message": res.Message})
	}
}
