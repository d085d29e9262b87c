//! Rebuild contender "kube-rs": what a kube-rs user writes —
//! `Api::<PersistentVolume>::list` page by page on a current-thread tokio
//! runtime, keeping the attached PVs of our driver in the same map.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, ListParams};
use rds_bench::{Run, Target, PAGE};

fn main() {
    let t = Target::from_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let recovered_and_run = rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&t.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let api: Api<PersistentVolume> = Api::all(client);
        let run = Run::start();
        let mut lp = ListParams::default().limit(PAGE as u32);
        let mut map: HashMap<String, String> = HashMap::new();
        loop {
            let list = api.list(&lp).await.unwrap();
            for pv in &list.items {
                rds_bench::keep_attached(pv, &mut map);
            }
            match list.metadata.continue_ {
                Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                _ => break,
            }
        }
        (map.len(), run)
    });
    let (recovered, run) = recovered_and_run;
    run.finish(recovered);
}
