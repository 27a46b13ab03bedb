package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Errors is every problem found in one configuration: Resolve and Parse
// report them all at once, each naming its key.
type Errors []error

func (e Errors) Error() string {
	s := make([]string, len(e))
	for i, err := range e {
		s[i] = err.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap lets errors.As find each *Error.
func (e Errors) Unwrap() []error { return e }

// didYouMean returns ` (did you mean "x"?)` for the known word closest to
// word, if one is close enough to be a likely misspelling, else "".
func didYouMean(word string, known []string) string {
	best, bestD := "", len(word)/3+2
	for _, k := range known {
		if d := editDistance(word, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// sections maps each schema struct's Go type name to its key path in the
// file ("cluster.heartbeat") and its keys, for error messages in config
// terms.
var sections = func() map[string]section {
	out := map[string]section{}
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			if t.Kind() == reflect.Map {
				path += ".NAME"
			} else if t.Kind() == reflect.Slice {
				path += "[N]"
			}
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		s := section{path: strings.TrimPrefix(path, ".")}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			s.keys = append(s.keys, name)
			walk(f.Type, path+"."+name)
		}
		out[t.String()] = s
	}
	walk(reflect.TypeOf(Config{}), "")
	return out
}()

type section struct {
	path string
	keys []string
}

var unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type (\S+)$`)

// yamlErrors turns the YAML decoder's errors into config terms: an unknown
// key is named by its path, with the closest known key.
func yamlErrors(err error) error {
	te, ok := err.(*yaml.TypeError)
	if !ok {
		return fmt.Errorf("parse: %w", err)
	}
	var errs Errors
	for _, msg := range te.Errors {
		m := unknownField.FindStringSubmatch(msg)
		if m == nil {
			errs = append(errs, fmt.Errorf("parse: %s", msg))
			continue
		}
		sec, ok := sections[m[3]]
		key := m[2]
		if ok && sec.path != "" {
			key = sec.path + "." + m[2]
		}
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf("unknown key (line %s)%s", m[1], didYouMean(m[2], sec.keys))})
	}
	return errs
}
