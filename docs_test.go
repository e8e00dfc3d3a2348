package corework_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// mdLink matches an inline Markdown link or image: [text](target) or
// [text](target "title").
var mdLink = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)

// TestDocLinks checks every relative link of the Markdown files of the
// repository (the README, docs/guia.md, the examples' READMEs): the file
// or directory it names exists, and a #fragment names a heading of the
// target (GitHub's anchors: lower case, spaces to hyphens, punctuation
// dropped). Links to other sites are not fetched.
func TestDocLinks(t *testing.T) {
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "." || d.Name() == "node_modules" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"README.md", filepath.Join("docs", "guia.md")} {
		if !slices.Contains(files, want) {
			t.Errorf("%s is missing", want)
		}
	}
	checked := 0
	for _, file := range files {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(stripCode(string(text)), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			path, frag, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
				fi, err := os.Stat(dest)
				if err != nil {
					t.Errorf("%s: link %q: %v", file, target, err)
					continue
				}
				if fi.IsDir() {
					dest = filepath.Join(dest, "README.md")
				}
			}
			if frag == "" {
				continue
			}
			if !strings.HasSuffix(dest, ".md") {
				t.Errorf("%s: link %q: a fragment into a file that is not Markdown", file, target)
				continue
			}
			anchors, err := headingAnchors(dest)
			if err != nil {
				t.Errorf("%s: link %q: %v", file, target, err)
				continue
			}
			if !anchors[frag] {
				t.Errorf("%s: link %q: no heading of %s has the anchor #%s", file, target, dest, frag)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative link found: the pattern is broken")
	}
	t.Logf("%d relative links in %d Markdown files", checked, len(files))
}

// stripCode blanks fenced code blocks, whose brackets are not links.
func stripCode(text string) string {
	var b strings.Builder
	fenced := false
	for line := range strings.Lines(text) {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			b.WriteString("\n")
			continue
		}
		if fenced {
			b.WriteString("\n")
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

// headingAnchors returns the anchors GitHub gives the headings of the
// Markdown file at path; a repeated heading gets -1, -2... appended.
func headingAnchors(path string) (map[string]bool, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	anchors := map[string]bool{}
	seen := map[string]int{}
	for line := range strings.Lines(stripCode(string(text))) {
		line = strings.TrimRight(line, "\r\n")
		if !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		a := slug(title)
		if n := seen[a]; n > 0 {
			anchors[a+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[a] = true
		}
		seen[a]++
	}
	return anchors, nil
}

// slug is GitHub's anchor of a heading: letters and digits lower-cased,
// spaces become hyphens, hyphens and underscores stay, the rest goes.
func slug(title string) string {
	var b strings.Builder
	for _, r := range title {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(unicode.ToLower(r))
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// TestSlug pins the anchor rule on headings of the two guides.
func TestSlug(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"Go versions", "go-versions"},
		{"Quickstart: `procpool`", "quickstart-procpool"},
		{"From Python to Go", "from-python-to-go"},
		{"¿Goroutines o procesos?", "goroutines-o-procesos"},
		{"Memoria en Go", "memoria-en-go"},
		{"Cuándo usar qué", "cuándo-usar-qué"},
	} {
		if got := slug(c.in); got != c.want {
			t.Errorf("slug(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
