package datapath

// The eBPF objects are generated from bpf/nlb.c and committed, so building
// needs no clang. `make generate` reruns this; `make check-generated` proves
// the committed objects match the source.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type nlb_state -type nlb_rule nlb bpf/nlb.c
