//! Rebuild contender "ours": the controller's own rebuild
//! (`AttachmentManager::rebuild`) against the page server in DIR.

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
