//! Rebuild contender "naive": what a hand-rolled client writes first — the
//! same pages over the same TLS (ureq), each decoded whole with serde_json
//! into complete PersistentVolume structs (k8s-openapi's), then the map.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::PersistentVolume;
use rds_bench::{Run, Target};

#[derive(serde::Deserialize)]
struct Page {
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta,
    items: Vec<PersistentVolume>,
}

fn main() {
    let t = Target::from_args();
    let agent = rds_bench::agent(&t.ca_pem);
    let run = Run::start();
    let mut cont = String::new();
    let mut map: HashMap<String, String> = HashMap::new();
    loop {
        let bytes = rds_bench::fetch_page(&agent, &t.url, &cont);
        let page: Page = serde_json::from_slice(&bytes).unwrap();
        for pv in &page.items {
            rds_bench::keep_attached(pv, &mut map);
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => cont = c,
            _ => break,
        }
    }
    run.finish(map.len());
}
