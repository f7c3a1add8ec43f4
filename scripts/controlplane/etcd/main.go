// Command etcd is a thin wrapper around go.etcd.io/etcd/server/v3/etcdmain,
// built from the published module (see go.mod for the pinned version). It
// mirrors main.go of the go.etcd.io/etcd/v3 root module of the same release,
// which cannot be built from the module proxy directly because its go.mod
// replaces its sibling modules with local directories.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
