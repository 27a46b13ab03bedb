package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"
)

// Error is a configuration problem, naming the key and its value.
type Error struct {
	Key   string
	Value string
	Msg   string
}

func (e *Error) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %q: %s", e.Key, e.Value, e.Msg)
}

func cerr(key, value, format string, args ...any) error {
	return &Error{Key: key, Value: value, Msg: fmt.Sprintf(format, args...)}
}

// Load reads, parses and validates a configuration file. It touches
// nothing on the host.
func Load(path string) (*Resolved, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, inFile(path, err)
	}
	r, err := c.Resolve()
	if err != nil {
		return nil, inFile(path, err)
	}
	return r, nil
}

// inFile prefixes each error with the file's path, as compilers do.
func inFile(path string, err error) error {
	errs, ok := err.(Errors)
	if !ok {
		return fmt.Errorf("%s: %w", path, err)
	}
	out := make(Errors, len(errs))
	for i, e := range errs {
		out[i] = fmt.Errorf("%s: %w", path, e)
	}
	return out
}

// Parse parses YAML strictly (unknown keys are errors) over the
// defaults. It does not validate; call Resolve.
func Parse(b []byte) (*Config, error) {
	c := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty")
		}
		return nil, yamlErrors(err)
	}
	return &c, nil
}
