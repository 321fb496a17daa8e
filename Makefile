# Entry points named in README.md. The scripts under hack/ do the work.
.PHONY: dev test bench cluster-up cluster-down crds lint

# Bring up the local control plane, install the CRDs, build the samples from a local git
# repository on the real node (config/dev, hack/sample-app) and run the operator in the
# foreground (Ctrl-C stops it; `make cluster-down` stops the cluster).
dev:
	hack/dev

# Every test: fmt, clippy, unit tests, and the e2e tests against a local control plane.
test:
	hack/test

# Every benchmark (the ignored e2e tests, release build) against the local control plane
# (`make cluster-up` first), each with its same-run baseline; `hack/bench scale` for one.
bench:
	hack/bench

cluster-up:
	hack/cluster up

cluster-down:
	hack/cluster down

# Regenerate crds/ from the Rust types, and the chart's and kustomize's copies (tests
# fail when any of them drifts).
crds:
	cargo run --quiet -- crds > crds/clouddeck.io.yaml
	cp crds/clouddeck.io.yaml charts/clouddeck/crds/clouddeck.io.yaml
	cp crds/clouddeck.io.yaml config/crd/clouddeck.io.yaml

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
