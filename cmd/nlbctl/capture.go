package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/spf13/cobra"

	"github.com/nlbproject/nlb/capture"
	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/heartbeat"
)

// exitProblems is capture's exit code when it reported something wrong.
const exitProblems = 4

func captureCommand(t *target) *cobra.Command {
	var ifname, read, write string
	var count int
	var duration time.Duration
	var assumeFormed bool
	c := &cobra.Command{
		Use:   "capture [--interface IF | --read FILE] [--write FILE] [--config F | --key-file F] [--count N] [--duration D]",
		Short: "Show the cluster's traffic live, annotated, and flag what is wrong",
		Long: `capture shows heartbeats (host, state, epoch, phase, view, incarnation,
verified or not), table chunks, ARP for the VIPs, and VIP flows with the
host the tables say should take them: with --cluster (or --host), the
live tables, each new flow asked of the agents in the background; else
from table chunks it captured, or, with --assume-formed, as if the hosts
heard had just formed the cluster.
It flags what is wrong: a flow
answered by two hosts, a flow answered by a host the tables do not give it
to, frames of another cluster, heartbeats whose tag does not verify,
malformed frames, and a host's heartbeats silent for longer than the loss
tolerance.

It runs on a cluster host or on any machine of the segment (the interface
is put in promiscuous mode while it runs). --config gives the VIPs, the
cluster key (to verify tags), the rules and hash seed (to name the host
that should take a flow) and the loss tolerance; --key-file gives only a
cluster key. --read analyzes a pcap file instead; --write saves the
frames to one. It exits 4 when it reported a problem.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, iface, err := t.analyzer()
			if err != nil {
				return err
			}
			a.AssumeFormed = assumeFormed
			if t.cluster != "" || t.host != "" {
				a.Lookup = t.liveTaker // the live tables, through the agents
			}
			if ifname == "" {
				ifname = iface
			}
			if (ifname == "") == (read == "") {
				return usageError{errors.New("give --interface (or --config) for a live capture, or --read FILE")}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if duration > 0 {
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			stop := make(chan os.Signal, 1)
			signal.Notify(stop, os.Interrupt)
			defer signal.Stop(stop)
			go func() {
				select {
				case <-stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			var next func(context.Context) (gopacket.Packet, error)
			if read != "" {
				f, err := os.Open(read)
				if err != nil {
					return err
				}
				defer f.Close()
				r, err := pcapgo.NewReader(f)
				if err != nil {
					return fmt.Errorf("%s: %w", read, err)
				}
				src := gopacket.NewPacketSource(r, r.LinkType())
				next = func(context.Context) (gopacket.Packet, error) { return src.NextPacket() }
			} else {
				l, err := capture.Open(ifname)
				if err != nil {
					return err
				}
				defer l.Close()
				next = l.Next
			}
			var pw *pcapgo.Writer
			if write != "" {
				f, err := os.Create(write)
				if err != nil {
					return err
				}
				defer f.Close()
				pw = pcapgo.NewWriter(f)
				if err := pw.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			problems := 0
			emit := func(evs []capture.Event) error {
				for _, e := range evs {
					if e.Kind == "problem" {
						problems++
					}
					if err := t.printEvent(out, e); err != nil {
						return err
					}
				}
				return nil
			}
			last := time.Now()
			for n := 0; count == 0 || n < count; n++ {
				p, err := next(ctx)
				if err != nil {
					if errors.Is(err, io.EOF) || ctx.Err() != nil {
						break
					}
					return err
				}
				last = p.Metadata().Timestamp
				if pw != nil {
					if err := pw.WritePacket(p.Metadata().CaptureInfo, p.Data()); err != nil {
						return err
					}
				}
				if err := emit(a.Packet(p)); err != nil {
					return err
				}
			}
			if read == "" {
				last = time.Now()
			}
			if err := emit(a.Finish(last)); err != nil {
				return err
			}
			if problems > 0 {
				return codeError{exitProblems, fmt.Sprintf("%d problem(s) reported", problems)}
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&ifname, "interface", "", "interface to capture on (default: the config's host.interface)")
	f.StringVar(&read, "read", "", "analyze this pcap file instead of capturing")
	f.StringVar(&write, "write", "", "also write the captured frames to this pcap file")
	f.IntVar(&count, "count", 0, "stop after this many frames (0: no limit)")
	f.DurationVar(&duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
	f.BoolVar(&assumeFormed, "assume-formed", false, "name the host that should take each flow from the tables of a cluster just formed by the hosts heard (needs --config); otherwise only captured table chunks name it")
	return c
}

// analyzer sets up the analysis from --config or --key-file; it returns
// the config's interface.
func (t *target) analyzer() (*capture.Analyzer, string, error) {
	a := &capture.Analyzer{}
	switch {
	case t.config != "":
		r, err := config.Load(t.config)
		if err != nil {
			return nil, "", err
		}
		a.Config, a.VIPs, a.Keys, a.Tolerance = r, r.VIPs, r.Keys.Heartbeat(), r.DeadAfter()
		return a, r.Interface, nil
	case t.keyFile != "":
		secret, err := config.ReadKeyFile("--key-file", t.keyFile, false)
		if err != nil {
			return nil, "", err
		}
		a.Keys = heartbeat.Keyring{heartbeat.DeriveKey(secret)}
	}
	return a, "", nil
}

func (t *target) printEvent(w io.Writer, e capture.Event) error {
	if t.asJSON {
		return writeJSONLine(w, e)
	}
	kind := e.Kind
	if kind == "problem" {
		kind = "PROBLEM"
	}
	_, err := fmt.Fprintf(w, "%s  %-9s %s\n", e.Time.Format("15:04:05.000"), kind, e.Text)
	return err
}
