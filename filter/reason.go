package filter

import "fmt"

// Verdict is what happens to a frame.
type Verdict uint8

const (
	// Pass: the frame is not filtered (not for a VIP, or a class every host
	// must see) and goes to the local stack untouched.
	Pass Verdict = 1
	// Accept: VIP traffic that this host takes. It goes to the local stack,
	// re-marked as addressed to this host.
	Accept Verdict = 2
	// Drop: VIP traffic that another host takes, or that nobody may take.
	Drop Verdict = 3
)

func (v Verdict) String() string {
	switch v {
	case Pass:
		return "pass"
	case Accept:
		return "accept"
	case Drop:
		return "drop"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Reason explains a verdict; the data plane counts packets per rule and
// reason. Values are shared with the eBPF program (enum nlb_reason) and are
// append-only: never renumber, add at the end.
type Reason uint8

const (
	ReasonInvalid           Reason = 0
	ReasonPassNotIP         Reason = 1  // neither IPv4 nor IPv6 (VLAN, other ethertypes)
	ReasonPassARP           Reason = 2  // ARP, or IPv6 neighbour discovery and MLD to a VIP: the agent and the stack need them
	ReasonPassHeartbeat     Reason = 3  // ethertype 0x886F
	ReasonPassNotVIP        Reason = 4  // IP not addressed to a VIP
	ReasonPassShort         Reason = 5  // IP too short to read the destination
	ReasonPassRemoteControl Reason = 6  // UDP to VIP:remote-control port
	ReasonAcceptOwner       Reason = 7  // bucket owned (or SYN in a dirty bucket)
	ReasonAcceptHeldFlow    Reason = 8  // a flow this host holds, in a dirty or retained bucket
	ReasonDropNotOwner      Reason = 9  // bucket belongs to another host
	ReasonDropDirtyNonSYN   Reason = 10 // dirty bucket, TCP packet of a flow not held here
	ReasonDropRuleDisabled  Reason = 11 // the matching rule is disabled
	ReasonDropMalformed     Reason = 12 // VIP traffic with a broken or truncated header
	ReasonDropLeaseExpired  Reason = 13 // owned bucket but the agent's lease expired
	ReasonDropHBSource      Reason = 14 // heartbeat frame claiming a host ID another live source holds
	ReasonDropHBBudget      Reason = 15 // heartbeat frame over its source's budget
	numReasons                     = 16
)

// NumReasons is the number of reason values, including ReasonInvalid.
const NumReasons = numReasons

var reasonNames = [numReasons]string{
	"invalid",
	"passed-not-ip",
	"passed-arp",
	"passed-heartbeat",
	"passed-not-vip",
	"passed-short",
	"passed-remote-control",
	"accepted-owner",
	"accepted-held-flow",
	"dropped-not-owner",
	"dropped-dirty-non-syn",
	"dropped-rule-disabled",
	"dropped-malformed",
	"dropped-lease-expired",
	"dropped-heartbeat-source",
	"dropped-heartbeat-budget",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Verdict returns the verdict a reason implies.
func (r Reason) Verdict() Verdict {
	switch r {
	case ReasonPassNotIP, ReasonPassARP, ReasonPassHeartbeat, ReasonPassNotVIP,
		ReasonPassShort, ReasonPassRemoteControl:
		return Pass
	case ReasonAcceptOwner, ReasonAcceptHeldFlow:
		return Accept
	}
	return Drop
}
