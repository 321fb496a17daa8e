//! End-to-end tests against the real local control plane that `hack/cluster up` starts
//! (kube-apiserver, controller-manager, scheduler, etcd, a kwok-simulated node and a real
//! node with a kubelet, containerd and runc).
//!
//! Run them with `make test`, which brings the control plane up and down around them.
//! Run by hand: `hack/cluster up && cargo test --test e2e`.

mod support;

mod cluster;

mod node;

mod builds;

mod dev;

mod operator;

mod api;

mod pipeline;

mod webhooks;

mod domains;

mod edge;

mod split;

mod hostnames;

mod cron_jobs;

mod chart;

mod outage;

mod memory;

mod skew;

mod idle;

mod scale;

mod traffic;
