// Command gitserver is the local cluster's git host: it serves the bare repositories
// under -root over git's smart HTTP protocol, by running `git http-backend` (Debian's git)
// as a CGI program. Anyone who reaches it may clone and push; a push to a repository
// that does not exist yet creates it. hack/cluster runs it on the real node's address
// only, so that build pods clone from it as they would from a git host.
//
//	gitserver -addr 10.213.0.1:8418 -root DIR
//
// Only the Go standard library: net/http/cgi speaks CGI to git.
package main

import (
	"flag"
	"log"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	addr := flag.String("addr", "", "address to listen on (host:port)")
	root := flag.String("root", "", "directory holding the bare repositories")
	flag.Parse()
	if *addr == "" || *root == "" {
		log.Fatal("-addr and -root are required")
	}
	git, err := exec.LookPath("git")
	if err != nil {
		log.Fatalf("git is required: %v", err)
	}
	if err := os.MkdirAll(*root, 0o755); err != nil {
		log.Fatal(err)
	}
	backend := &cgi.Handler{
		Path: git,
		Args: []string{"http-backend"},
		Root: "/",
		Env: []string{
			"GIT_PROJECT_ROOT=" + *root,
			"GIT_HTTP_EXPORT_ALL=1",
			// http-backend accepts pushes from an authenticated user only; everyone is.
			"REMOTE_USER=local",
		},
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if repo, ok := repository(r.URL.Path); ok && r.URL.Query().Get("service") == "git-receive-pack" {
			dir := filepath.Join(*root, filepath.FromSlash(repo))
			if _, err := os.Stat(dir); os.IsNotExist(err) {
				out, err := exec.Command(git, "init", "-q", "--bare", "--initial-branch=main", dir).CombinedOutput()
				if err != nil {
					log.Printf("creating %s: %v: %s", repo, err, out)
					http.Error(w, "cannot create the repository", http.StatusInternalServerError)
					return
				}
			}
		}
		backend.ServeHTTP(w, r)
	})
	log.Printf("serving git repositories under %s on http://%s", *root, *addr)
	log.Fatal(http.ListenAndServe(*addr, handler))
}

// repository is the repository path of a push's first request, /<repo>.git/info/refs,
// if it names one that stays under the root.
func repository(path string) (string, bool) {
	repo, ok := strings.CutSuffix(path, "/info/refs")
	repo = strings.TrimPrefix(repo, "/")
	if !ok || !strings.HasSuffix(repo, ".git") {
		return "", false
	}
	for _, part := range strings.Split(repo, "/") {
		if part == "" || part == "." || part == ".." {
			return "", false
		}
	}
	return repo, true
}
