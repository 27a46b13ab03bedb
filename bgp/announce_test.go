package bgp

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/nlbproject/nlb/filter"
)

func TestAnnounceable(t *testing.T) {
	svc, other := netip.MustParseAddr("198.19.200.1"), netip.MustParseAddr("198.19.200.2")
	owned := filter.Uniform(2)
	var none filter.Table
	rules := []filter.PortRule{
		{VIP: svc, StartPort: 80, EndPort: 80, Protocol: filter.ProtoTCP, Mode: filter.ModeMultiple},
		{StartPort: 53, EndPort: 53, Protocol: filter.ProtoUDP, Mode: filter.ModeMultiple}, // every VIP
	}
	view := func(serving, lease bool, tables ...*filter.Table) View {
		v := View{Serving: serving, LeaseValid: lease, Rules: rules}
		copy(v.Tables[:], tables)
		return v
	}
	for _, c := range []struct {
		name string
		v    View
		want []netip.Addr
		why  Reason
	}{
		{"serving", view(true, true, owned, owned), []netip.Addr{svc, other}, Announcing},
		{"not serving (stopped, draining)", view(false, true, owned, owned), nil, NotServing},
		{"lease expired (no quorum)", view(true, false, owned, owned), nil, LeaseExpired},
		{"the VIP's own rule has no owner, the all-VIP rule does", view(true, true, &none, owned), []netip.Addr{svc, other}, Announcing},
		{"no rule of either VIP has an owner", view(true, true, &none, &none), nil, NobodyServing},
		{"before the first epoch", view(true, true), nil, NobodyServing},
	} {
		got, why := Announceable(c.v, []netip.Addr{svc, other})
		if !slices.Equal(got, c.want) || why != c.why {
			t.Errorf("%s: got %v %q, want %v %q", c.name, got, why, c.want, c.why)
		}
	}
	// A VIP no rule covers is served by the default rule's table.
	v := View{Serving: true, LeaseValid: true}
	if got, _ := Announceable(v, []netip.Addr{svc}); got != nil {
		t.Errorf("no default owner: %v", got)
	}
	v.Tables[filter.DefaultRule] = filter.Uniform(1)
	if got, _ := Announceable(v, []netip.Addr{svc}); !slices.Equal(got, []netip.Addr{svc}) {
		t.Errorf("default owner: %v", got)
	}
}
