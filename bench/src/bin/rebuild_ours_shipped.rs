//! Rebuild contender "ours-shipped": `rebuild-ours` with the allocator the
//! shipped static binary uses (`src/allocator.rs`, the same file), so the
//! memory measured is the product's as it runs. `rebuild-ours` keeps the
//! system allocator, like every other contender.

#[path = "../../../src/allocator.rs"]
#[allow(dead_code)]
mod allocator;

#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

use rds_bench::{Run, Target, DRIVER};
use rds_csi_controller::{attachment::AttachmentManager, kube};

fn main() {
    let t = Target::from_args();
    let cfg = kube::Config::from_kubeconfig(&t.kubeconfig).unwrap();
    let opts = kube::ClientOptions {
        qps: 0.0,
        ..Default::default()
    };
    let manager = AttachmentManager::new(kube::Client::new(&cfg, opts).unwrap(), DRIVER);
    let run = Run::start();
    let recovered = manager.rebuild().unwrap().recovered;
    run.finish(recovered);
}
