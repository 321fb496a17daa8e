// kstatus reads Kubernetes objects as JSON on stdin (one object or a List, as
// `kubectl get -o json` prints them) and prints, per object, what the kstatus library of
// sigs.k8s.io/cli-utils computes for it: the status Flux, `kubectl wait`-style tooling and
// cli-utils appliers act on. One line per object, tab-separated:
//
//	Kind/name	Current|InProgress|Failed|Terminating|...	message
//
// The e2e tests build it (hack/cluster, cached by version) and run it against live
// objects, so that CloudDeck's conditions are judged by the real library, not by our
// reading of its rules.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("read stdin: %v", err)
	}
	// The unstructured JSON scheme keeps integers int64, as kstatus reads them.
	decoded, _, err := unstructured.UnstructuredJSONScheme.Decode(input, nil, nil)
	if err != nil {
		fail("parse stdin: %v", err)
	}
	var objects []unstructured.Unstructured
	switch decoded := decoded.(type) {
	case *unstructured.UnstructuredList:
		objects = decoded.Items
	case *unstructured.Unstructured:
		objects = []unstructured.Unstructured{*decoded}
	default:
		fail("not an object or a List: %T", decoded)
	}
	for i := range objects {
		u := &objects[i]
		result, err := status.Compute(u)
		if err != nil {
			fail("%s/%s: %v", u.GetKind(), u.GetName(), err)
		}
		fmt.Printf("%s/%s\t%s\t%s\n", u.GetKind(), u.GetName(), result.Status, result.Message)
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}
