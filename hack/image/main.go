// Command image assembles a single-layer OCI image from files on this machine, writes it
// as a tarball that `ctr images import` reads and/or pushes it to a registry over plain
// HTTP. Nothing is pulled: the local cluster's real node runs only images made here from
// Debian packages and Go-built binaries. Prints the image's digest.
//
//	image --tag REF [--out FILE.tar] [--push REF]... [--file SRC=DST]... [--link DST=TARGET]...
//	      [--dir DST[:UID:MODE]]... [--fcap DST=CAP,...]...
//	      [--entrypoint '["/bin/x"]'] [--cmd '["a"]'] [--env K=V]... [--user UID] [--workdir DIR]
//
// The layer is reproducible: entries are sorted, owned by root unless --dir says
// otherwise, and dated 1970, so the same inputs give the same digest on every machine.
// --fcap gives a file capabilities (the security.capability xattr, effective), the way
// Debian's uidmap package gives newuidmap and newgidmap theirs; the container's runtime
// sets them when it unpacks the layer.
package main

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

type entry struct {
	name   string // path in the image, without a leading slash
	source string // file on this machine (regular files)
	target string // symlink target
	dir    bool
	uid    int   // owner (and group) of a directory
	mode   int64 // of a directory; 0 for the default
	caps   []byte
}

// Capability numbers (linux/capability.h) that --fcap accepts.
var capabilities = map[string]uint{"setgid": 6, "setuid": 7}

func main() {
	var files, links, dirs, fcaps, env, pushes list
	tag := flag.String("tag", "", "image reference to name the image by (required)")
	out := flag.String("out", "", "tarball to write")
	entrypoint := flag.String("entrypoint", "", "entrypoint as a JSON array")
	cmd := flag.String("cmd", "", "command as a JSON array")
	user := flag.String("user", "", "user to run as")
	workdir := flag.String("workdir", "", "working directory")
	flag.Var(&files, "file", "SRC=DST: copy file SRC to DST in the image (mode kept)")
	flag.Var(&links, "link", "DST=TARGET: a symlink at DST pointing to TARGET")
	flag.Var(&dirs, "dir", "DST[:UID:MODE]: an empty directory (default: root's, mode 1777 for /tmp, else 0755)")
	flag.Var(&fcaps, "fcap", "DST=CAP,...: file capabilities (setuid, setgid) of the file at DST")
	flag.Var(&env, "env", "K=V: an environment variable")
	flag.Var(&pushes, "push", "REF: push the image there, over plain HTTP (a local registry)")
	flag.Parse()
	if *tag == "" || (*out == "" && len(pushes) == 0) {
		fail("--tag, and --out or --push, are required")
	}
	var entries []entry
	for _, f := range files {
		src, dst, ok := strings.Cut(f, "=")
		if !ok {
			fail("--file %q: want SRC=DST", f)
		}
		entries = append(entries, entry{name: clean(dst), source: src})
	}
	for _, l := range links {
		dst, target, ok := strings.Cut(l, "=")
		if !ok {
			fail("--link %q: want DST=TARGET", l)
		}
		entries = append(entries, entry{name: clean(dst), target: target})
	}
	for _, d := range dirs {
		e := entry{dir: true}
		dst, owner, owned := strings.Cut(d, ":")
		e.name = clean(dst)
		if owned {
			uid, mode, ok := strings.Cut(owner, ":")
			var err error
			if e.uid, err = strconv.Atoi(uid); err != nil || !ok {
				fail("--dir %q: want DST:UID:MODE", d)
			}
			if e.mode, err = strconv.ParseInt(mode, 8, 64); err != nil {
				fail("--dir %q: MODE is octal", d)
			}
		}
		entries = append(entries, e)
	}
	for _, f := range fcaps {
		dst, names, ok := strings.Cut(f, "=")
		if !ok {
			fail("--fcap %q: want DST=CAP,...", f)
		}
		found := false
		for i := range entries {
			if entries[i].name == clean(dst) && entries[i].source != "" {
				entries[i].caps, found = capabilityXattr(names), true
			}
		}
		if !found {
			fail("--fcap %q: no --file at %s", f, dst)
		}
	}
	layerTar, err := layer(entries)
	check(err, "building the layer")
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	check(err, "reading the layer")
	img, err := mutate.AppendLayers(empty.Image, l)
	check(err, "adding the layer")

	cfg, err := img.ConfigFile()
	check(err, "reading the config")
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	c := &cfg.Config
	c.Entrypoint, c.Cmd = jsonList(*entrypoint, "--entrypoint"), jsonList(*cmd, "--cmd")
	c.Env, c.User, c.WorkingDir = env, *user, *workdir
	img, err = mutate.ConfigFile(img, cfg)
	check(err, "writing the config")

	ref, err := name.NewTag(*tag)
	check(err, "parsing --tag")
	if *out != "" {
		check(tarball.WriteToFile(*out, ref, img), "writing "+*out)
	}
	for _, p := range pushes {
		dst, err := name.ParseReference(p, name.Insecure)
		check(err, "parsing --push "+p)
		check(remote.Write(dst, img), "pushing to "+p)
	}
	digest, err := img.Digest()
	check(err, "computing the digest")
	fmt.Println(digest)
}

// layer writes the entries, with every parent directory they need, as one tar.
func layer(entries []entry) ([]byte, error) {
	all := map[string]entry{}
	for _, e := range entries {
		for dir := path.Dir(e.name); dir != "." && dir != "/"; dir = path.Dir(dir) {
			if _, ok := all[dir]; !ok {
				all[dir] = entry{name: dir, dir: true}
			}
		}
		all[e.name] = e
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, n := range names {
		e := all[n]
		h := &tar.Header{Name: n, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		var body []byte
		switch {
		case e.dir:
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, n+"/", 0o755
			if n == "tmp" {
				h.Mode = 0o1777
			}
			if e.mode != 0 {
				h.Mode, h.Uid, h.Gid, h.Uname, h.Gname = e.mode, e.uid, e.uid, "", ""
			}
		case e.target != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.target, 0o777
		default:
			info, err := os.Stat(e.source)
			if err != nil {
				return nil, err
			}
			if body, err = os.ReadFile(e.source); err != nil {
				return nil, err
			}
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, int64(info.Mode().Perm()), int64(len(body))
			if e.caps != nil {
				h.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": string(e.caps)}
			}
		}
		if err := w.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := w.Write(body); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), w.Close()
}

// capabilityXattr is the value of security.capability that makes the named capabilities
// permitted and effective on exec (struct vfs_cap_data, revision 2, little-endian).
func capabilityXattr(names string) []byte {
	var permitted uint32
	for _, name := range strings.Split(names, ",") {
		bit, ok := capabilities[name]
		if !ok {
			fail("--fcap: unknown capability %q", name)
		}
		permitted |= 1 << bit
	}
	const revision2, effective = 0x02000000, 0x1
	value := make([]byte, 20)
	binary.LittleEndian.PutUint32(value[0:], revision2|effective)
	binary.LittleEndian.PutUint32(value[4:], permitted)
	return value
}

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

func jsonList(s, flagName string) []string {
	if s == "" {
		return nil
	}
	var v []string
	check(json.Unmarshal([]byte(s), &v), flagName+" must be a JSON array of strings")
	return v
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "image: "+format+"\n", args...)
	os.Exit(1)
}
