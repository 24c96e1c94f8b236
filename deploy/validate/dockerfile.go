package validate

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Instruction is one Dockerfile instruction after joining continuation lines.
type Instruction struct {
	Line  int      // 1-based line the instruction starts on
	Cmd   string   // upper-case: FROM, COPY, RUN, USER, ENTRYPOINT, …
	Flags []string // leading --flag[=value] words (COPY --from=…, RUN --mount=…)
	Args  string   // the rest of the instruction, trimmed
}

// ParseDockerfile splits a Dockerfile into instructions: comments and blank
// lines are dropped, lines ending in a backslash are joined with the next,
// and leading --flags are separated. It handles the subset of the syntax
// this project's Dockerfiles use (no heredocs, default escape character).
func ParseDockerfile(data []byte) ([]Instruction, error) {
	var out []Instruction
	var cur strings.Builder
	start := 0
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	for i, line := range lines {
		t := strings.TrimSpace(line)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if cur.Len() > 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue // blank and comment lines inside a continuation are ignored
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(t, `\`); ok {
			cur.WriteString(body)
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(t)
		ins, err := parseInstruction(start, cur.String())
		if err != nil {
			return nil, err
		}
		out = append(out, ins)
		cur.Reset()
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("validate: dockerfile line %d: continuation at end of file", start)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("validate: dockerfile has no instructions")
	}
	return out, nil
}

var instructionRE = regexp.MustCompile(`^([A-Za-z]+)(\s+(.*))?$`)

func parseInstruction(line int, s string) (Instruction, error) {
	m := instructionRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return Instruction{}, fmt.Errorf("validate: dockerfile line %d: not an instruction: %.40q", line, s)
	}
	ins := Instruction{Line: line, Cmd: strings.ToUpper(m[1])}
	rest := strings.TrimSpace(m[3])
	for strings.HasPrefix(rest, "--") {
		word, after, _ := strings.Cut(rest, " ")
		ins.Flags = append(ins.Flags, word)
		rest = strings.TrimSpace(after)
	}
	ins.Args = rest
	return ins, nil
}

// Stage is one build stage: its FROM and the instructions after it.
type Stage struct {
	From         Instruction
	Image, Alias string
	Body         []Instruction
}

// Stages groups instructions by FROM. Instructions before the first FROM
// (ARG) are returned in no stage.
func Stages(ins []Instruction) []Stage {
	var st []Stage
	for _, in := range ins {
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			s := Stage{From: in}
			if len(f) > 0 {
				s.Image = f[0]
			}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.Alias = f[2]
			}
			st = append(st, s)
			continue
		}
		if len(st) > 0 {
			st[len(st)-1].Body = append(st[len(st)-1].Body, in)
		}
	}
	return st
}

var cmdPkgRE = regexp.MustCompile(`(^|\s)\./cmd/([A-Za-z0-9_-]+)(\s|$)`)

// CheckDockerfile checks the Dockerfile of binary name (kbs, kbsctl,
// cml-loader) against the repository at root (the build context):
// multi-stage; a golang:1.26 builder that builds ./cmd/<name> statically
// (CGO_ENABLED=0, -trimpath, -ldflags "-s -w"); a distroless-nonroot or
// scratch final stage with no RUN, only COPY --from a builder, USER
// 65532:65532 and an exec-form ENTRYPOINT; every build-context COPY source
// and ./cmd/ package exists.
func CheckDockerfile(name string, data []byte, root string) error {
	ins, err := ParseDockerfile(data)
	if err != nil {
		return err
	}
	var errs []error
	bad := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.Dockerfile:%d: "+format, append([]any{name, line}, args...)...))
	}
	st := Stages(ins)
	if len(st) < 2 {
		bad(1, "must be multi-stage (a builder and a final stage), has %d stage(s)", len(st))
		return joinErrors(errs)
	}
	builders := map[string]bool{}
	built := false
	for _, s := range st[:len(st)-1] {
		if !strings.HasPrefix(s.Image, "golang:1.26") {
			bad(s.From.Line, "builder image %q must be golang:1.26", s.Image)
		}
		if s.Alias != "" {
			builders[s.Alias] = true
		}
		for _, in := range s.Body {
			switch in.Cmd {
			case "COPY", "ADD":
				if in.Cmd == "ADD" {
					bad(in.Line, "use COPY, not ADD")
				}
				if hasFlag(in.Flags, "--from") {
					continue
				}
				srcs, _, err := copyArgs(in.Args)
				if err != nil {
					bad(in.Line, "%v", err)
				}
				for _, src := range srcs {
					// A source is relative to the context even with a
					// leading "/"; one that climbs out with ".." is refused
					// rather than globbed on the host (which is slow and
					// answers for the wrong filesystem).
					if rel := strings.TrimLeft(src, "/"); rel != "" && !filepath.IsLocal(filepath.FromSlash(rel)) {
						bad(in.Line, "COPY source %q leaves the build context", src)
						continue
					}
					if m, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(src))); len(m) == 0 {
						bad(in.Line, "COPY source %q does not exist in the build context", src)
					}
				}
			case "RUN":
				m := cmdPkgRE.FindAllStringSubmatch(in.Args, -1)
				for _, sub := range m {
					if !hasGoFiles(filepath.Join(root, "cmd", sub[2])) {
						bad(in.Line, "./cmd/%s has no Go files in the repository", sub[2])
					}
				}
				if strings.Contains(in.Args, "go build") {
					built = true
					for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w"`, "./cmd/" + name} {
						if !strings.Contains(in.Args, want) {
							bad(in.Line, "go build must use %s", want)
						}
					}
				}
			}
		}
	}
	if !built {
		bad(1, "no builder stage runs go build")
	}
	final := st[len(st)-1]
	if final.Image != "gcr.io/distroless/static-debian12:nonroot" && final.Image != "scratch" {
		bad(final.From.Line, "final image %q must be gcr.io/distroless/static-debian12:nonroot or scratch", final.Image)
	}
	var user, entry *Instruction
	for i, in := range final.Body {
		switch in.Cmd {
		case "RUN":
			bad(in.Line, "the final stage has no shell: no RUN")
		case "COPY", "ADD":
			from := flagValue(in.Flags, "--from")
			if in.Cmd != "COPY" || !builders[from] {
				bad(in.Line, "the final stage may only COPY --from a builder stage")
			}
		case "USER":
			user = &final.Body[i]
		case "ENTRYPOINT":
			entry = &final.Body[i]
		}
	}
	if user == nil || user.Args != "65532:65532" {
		bad(final.From.Line, "the final stage must set USER 65532:65532")
	}
	if entry == nil {
		bad(final.From.Line, "the final stage needs an ENTRYPOINT")
	} else {
		var argv []string
		if err := json.Unmarshal([]byte(entry.Args), &argv); err != nil || len(argv) == 0 {
			bad(entry.Line, "ENTRYPOINT must be exec form (a JSON array)")
		} else if filepath.Base(argv[0]) != name {
			bad(entry.Line, "ENTRYPOINT runs %q, want the %s binary", argv[0], name)
		}
	}
	return joinErrors(errs)
}

func hasFlag(flags []string, name string) bool {
	return flagValue(flags, name) != "" || strings.Contains(" "+strings.Join(flags, " ")+" ", " "+name+" ")
}

// copyArgs splits COPY's arguments (shell or JSON form) into sources and
// destination.
func copyArgs(args string) (srcs []string, dst string, err error) {
	var words []string
	if strings.HasPrefix(args, "[") {
		if err := json.Unmarshal([]byte(args), &words); err != nil {
			return nil, "", fmt.Errorf("COPY: bad JSON form: %w", err)
		}
	} else {
		words = strings.Fields(args)
	}
	if len(words) < 2 {
		return nil, "", fmt.Errorf("COPY needs a source and a destination")
	}
	return words[:len(words)-1], words[len(words)-1], nil
}

func hasGoFiles(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range m {
		if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}
