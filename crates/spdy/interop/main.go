// Drives staticlet-spdy's interop_server with client-go's SPDY executor and port forwarder.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/util/exec"
)

var base string

func fail(format string, a ...any) { fmt.Printf("FAIL: "+format+"\n", a...); os.Exit(1) }

func execURL(q string) *url.URL {
	u, _ := url.Parse(base + "/exec?" + q)
	return u
}

type sizes struct {
	ch chan remotecommand.TerminalSize
}

func (s *sizes) Next() *remotecommand.TerminalSize {
	v, ok := <-s.ch
	if !ok {
		return nil
	}
	return &v
}

func run(q string, opts remotecommand.StreamOptions) error {
	cfg := &rest.Config{Host: base}
	ex, err := remotecommand.NewSPDYExecutor(cfg, "POST", execURL(q))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return ex.StreamWithContext(ctx, opts)
}

func main() {
	base = "http://" + os.Args[1]

	// exec: stdin -> upper-cased stdout, stderr, exit 0.
	var out, errOut bytes.Buffer
	err := run("command=upper&input=1&output=1&error=1", remotecommand.StreamOptions{
		Stdin: strings.NewReader("hello from client-go"), Stdout: &out, Stderr: &errOut})
	if err != nil || out.String() != "HELLO FROM CLIENT-GO" || errOut.String() != "bye\n" {
		fail("upper: err=%v out=%q stderr=%q", err, out.String(), errOut.String())
	}
	fmt.Println("ok: exec stdin/stdout/stderr, exit 0")

	// exec: exit code 42 through the v4 status.
	out.Reset()
	err = run("command=exit&command=42&output=1&error=1", remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	var codeErr exec.CodeExitError
	if !errors.As(err, &codeErr) || codeErr.Code != 42 {
		fail("exit 42: err=%#v", err)
	}
	fmt.Printf("ok: exit code 42 (%v)\n", err)

	// exec: 5 MiB of stdout (spdystream does no flow control: more than any window).
	out.Reset()
	err = run("command=big&command=5242880&output=1", remotecommand.StreamOptions{Stdout: &out})
	if err != nil || out.Len() != 5242880 {
		fail("big: err=%v len=%d", err, out.Len())
	}
	fmt.Println("ok: 5 MiB stdout")

	// exec with a tty: resize events.
	out.Reset()
	ch := make(chan remotecommand.TerminalSize, 3)
	ch <- remotecommand.TerminalSize{Width: 80, Height: 24}
	ch <- remotecommand.TerminalSize{Width: 132, Height: 43}
	ch <- remotecommand.TerminalSize{Width: 0, Height: 0}
	pr, pw := io.Pipe()
	go func() { time.Sleep(2 * time.Second); pw.Close() }()
	err = run("command=size&input=1&output=1&tty=1", remotecommand.StreamOptions{
		Stdin: pr, Stdout: &out, Tty: true, TerminalSizeQueue: &sizes{ch}})
	if err != nil || out.String() != "80x24\n132x43\n0x0\n" {
		fail("resize: err=%v out=%q", err, out.String())
	}
	fmt.Println("ok: tty resize")

	// port-forward: port 1 echoes, port 2 fails with kubelet's message.
	cfg := &rest.Config{Host: base}
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		fail("round tripper: %v", err)
	}
	pfURL, _ := url.Parse(base + "/portforward")
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", pfURL)
	stop, ready := make(chan struct{}), make(chan struct{})
	var pfOut, pfErr bytes.Buffer
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:1", "0:2"}, stop, ready, &pfOut, &pfErr)
	if err != nil {
		fail("port forwarder: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	<-ready
	ports, _ := fw.GetPorts()
	for round := 0; round < 3; round++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].Local))
		if err != nil {
			fail("dial: %v", err)
		}
		msg := bytes.Repeat([]byte(fmt.Sprintf("round %d ", round)), 20000)
		go func() { c.Write(msg); c.(*net.TCPConn).CloseWrite() }()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Equal(got, msg) {
			fail("echo round %d: err=%v got %d bytes want %d", round, err, len(got), len(msg))
		}
	}
	fmt.Println("ok: port-forward echo, 3 connections on one session")
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[1].Local))
	if err != nil {
		fail("dial 2: %v", err)
	}
	c.Write([]byte("x"))
	io.ReadAll(c)
	c.Close()
	select {
	case err := <-done:
		fmt.Printf("ok: port-forward failure ends the forwarder (err=%v)\n", err)
	case <-time.After(20 * time.Second):
		close(stop)
		fail("port-forward failure did not end the session")
	}
	// client-go reports the kubelet-worded message through klog ("an error occurred forwarding
	// <local> -> 2: error forwarding port 2 to pod interop, uid : ...").
	fmt.Println("ALL OK")
}
