// A Go HTTP server that unbroken can run as a worker (`unbroken serve --cmd ./server`).
//
// What main() needs, coming from endless or zerodown:
//  1. take the listener from fd 3 (LISTEN_FDS/LISTEN_PID, as systemd passes it);
//  2. send READY=1 on NOTIFY_SOCKET once it is serving;
//  3. on SIGTERM stop accepting, answer what still arrives on kept-alive connections
//     with "Connection: close", and exit when the connections are done.
//
// The master (unbroken) keeps the listening socket and its PID for the life of the
// service, so supervisor and systemd never see the service restart.
// Standard library only.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

var version = "dev" // set with -ldflags "-X main.version=v2"

func main() {
	if version == "broken" {
		fmt.Fprintln(os.Stderr, "this build exits at start")
		os.Exit(1)
	}
	listener, err := listenerFromMaster()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var draining atomic.Bool
	var open atomic.Int64
	server := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if draining.Load() {
				w.Header().Set("Connection", "close") // the client reconnects to a new worker
			}
			fmt.Fprintf(w, "%s %d\n", version, os.Getpid())
		}),
		IdleTimeout:       5 * time.Second, // idle kept-alive connections end on their own
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(c net.Conn, state http.ConnState) {
			switch state {
			case http.StateNew:
				open.Add(1)
			case http.StateClosed, http.StateHijacked:
				open.Add(-1)
			}
		},
	}
	go server.Serve(listener)
	notify("READY=1")

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	<-stop
	draining.Store(true)
	listener.Close() // our copy only: the master's socket keeps queueing for the others
	deadline := time.Now().Add(25 * time.Second)
	for open.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

func listenerFromMaster() (net.Listener, error) {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") == "" {
		return nil, fmt.Errorf("no listening socket passed (LISTEN_FDS); run under unbroken --cmd")
	}
	return net.FileListener(os.NewFile(3, "listener"))
}

func notify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	conn.Write([]byte(state))
}
