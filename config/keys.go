package config

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"os"

	"github.com/nlbproject/nlb/heartbeat"
	"github.com/nlbproject/nlb/remote"
)

// Keys are a cluster's secrets, one per role (docs/config.md, "Keys"):
//   - the cluster key authenticates heartbeats: only hosts hold it;
//   - the admin key authenticates commands (nlbctl on an admin's machine);
//   - the monitor key authenticates the read-only commands.
//
// Each may have a next key, accepted besides the current one while a key
// rotation is rolled across the hosts. Where no admin or monitor key file
// is set, the cluster key serves that role (a host can do anything).
type Keys struct {
	Cluster, NextCluster []byte
	Admin, NextAdmin     []byte
	Monitor, NextMonitor []byte
}

// Heartbeat returns the heartbeat keyring: current first.
func (k *Keys) Heartbeat() heartbeat.Keyring {
	ring := heartbeat.Keyring{heartbeat.DeriveKey(k.Cluster)}
	if k.NextCluster != nil {
		ring = append(ring, heartbeat.DeriveKey(k.NextCluster))
	}
	return ring
}

// Remote returns the remote-control keyrings of both roles.
func (k *Keys) Remote() remote.Keys {
	ring := func(cur, next []byte, role remote.Role) remote.Keyring {
		r := remote.Keyring{remote.DeriveKey(cur, role)}
		if next != nil {
			r = append(r, remote.DeriveKey(next, role))
		}
		return r
	}
	return remote.Keys{Admin: ring(k.Admin, k.NextAdmin, remote.RoleAdmin), Monitor: ring(k.Monitor, k.NextMonitor, remote.RoleMonitor)}
}

// Equal reports whether two key sets hold the same secrets.
func (k *Keys) Equal(o *Keys) bool {
	eq := func(a, b []byte) bool { return hmac.Equal(a, b) && (a == nil) == (b == nil) }
	return eq(k.Cluster, o.Cluster) && eq(k.NextCluster, o.NextCluster) && eq(k.Admin, o.Admin) &&
		eq(k.NextAdmin, o.NextAdmin) && eq(k.Monitor, o.Monitor) && eq(k.NextMonitor, o.NextMonitor)
}

// ReadKeyFile reads a key file: at least MinKeyLen bytes once surrounding
// white space is trimmed, in a file that only its owner can read (unless
// allowReadable). field names the configuration key in errors.
func ReadKeyFile(field, path string, allowReadable bool) ([]byte, error) {
	key, err := readSecret(field, path, allowReadable)
	if err != nil {
		return nil, err
	}
	if len(key) < MinKeyLen {
		return nil, cerr(field, path, "key is %d bytes, at least %d required (nlbctl keygen writes one)", len(key), MinKeyLen)
	}
	return key, nil
}

// readSecret reads a file holding a secret, refusing one that group or
// others can read unless allowReadable; surrounding space is trimmed.
func readSecret(field, path string, allowReadable bool) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, cerr(field, path, "unreadable: %v", errors.Unwrap(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, cerr(field, path, "not a regular file")
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && !allowReadable {
		return nil, cerr(field, path, "mode %04o lets group or others read the key; chmod 600 it (or set host.allow_readable_key_files)", perm)
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, cerr(field, path, "unreadable: %v", errors.Unwrap(err))
	}
	return bytes.TrimSpace(key), nil
}

// resolveKeys reads every key file.
func (r *Resolved) resolveKeys(c *Config) error {
	allow := c.Host.AllowReadableKeyFiles
	read := func(field, path string) ([]byte, error) {
		if path == "" {
			return nil, nil
		}
		return ReadKeyFile(field, path, allow)
	}
	if c.Cluster.KeyFile == "" {
		return cerr("cluster.key_file", "", "required: heartbeats are authenticated with this key")
	}
	rc := c.Cluster.RemoteControl
	for _, f := range []struct {
		field, path string
		dst         *[]byte
	}{
		{"cluster.key_file", c.Cluster.KeyFile, &r.Keys.Cluster},
		{"cluster.next_key_file", c.Cluster.NextKeyFile, &r.Keys.NextCluster},
		{"cluster.remote_control.admin_key_file", rc.AdminKeyFile, &r.Keys.Admin},
		{"cluster.remote_control.next_admin_key_file", rc.NextAdminKeyFile, &r.Keys.NextAdmin},
		{"cluster.remote_control.monitor_key_file", rc.MonitorKeyFile, &r.Keys.Monitor},
		{"cluster.remote_control.next_monitor_key_file", rc.NextMonitorKeyFile, &r.Keys.NextMonitor},
	} {
		k, err := read(f.field, f.path)
		if err != nil {
			return err
		}
		*f.dst = k
	}
	if r.Keys.NextAdmin != nil && r.Keys.Admin == nil {
		return cerr("cluster.remote_control.next_admin_key_file", rc.NextAdminKeyFile, "needs admin_key_file: a next key rotates a role's own key")
	}
	if r.Keys.NextMonitor != nil && r.Keys.Monitor == nil {
		return cerr("cluster.remote_control.next_monitor_key_file", rc.NextMonitorKeyFile, "needs monitor_key_file: a next key rotates a role's own key")
	}
	if r.Keys.Admin == nil {
		r.Keys.Admin, r.Keys.NextAdmin = r.Keys.Cluster, r.Keys.NextCluster
	}
	if r.Keys.Monitor == nil {
		r.Keys.Monitor, r.Keys.NextMonitor = r.Keys.Admin, r.Keys.NextAdmin
	}
	if c.Cluster.HashSeed == "" && (r.Keys.NextCluster != nil) {
		return cerr("cluster.hash_seed", "", "must be set while rotating the cluster key: the seed derives from the key, and every flow would move (pin today's: hash_seed: %x)", seedFromKey(r.Keys.Cluster))
	}
	r.Key = r.Keys.Cluster
	return nil
}

// seedFromKey is the hash seed of a cluster that sets none.
func seedFromKey(key []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("nlb hash seed v1"))
	return mac.Sum(nil)[:16]
}
