// Command kube-apiserver is a thin wrapper around
// k8s.io/kubernetes/cmd/kube-apiserver/app, built from the published module
// (see go.mod for the pinned version). It mirrors
// k8s.io/kubernetes/cmd/kube-apiserver/apiserver.go of the same release.
package main

import (
	"os"
	_ "time/tzdata" // for CronJob Time Zone support

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
