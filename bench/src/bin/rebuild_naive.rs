//! Rebuild contender "naive": what a hand-rolled client writes first — the
//! same pages over the same TLS (ureq), each decoded whole with serde_json
//! into complete PersistentVolume structs (k8s-openapi's), then the map.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::PersistentVolume;
use rds_bench::{encode_continue, Run, Target, ATTACHED_NODE, DRIVER, PAGE, TOKEN};

#[derive(serde::Deserialize)]
struct Page {
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta,
    items: Vec<PersistentVolume>,
}

fn main() {
    let t = Target::from_args();
    let certs: Vec<_> = ureq::tls::parse_pem(t.ca_pem.as_bytes())
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder().tls_config(tls).build().into();
    let run = Run::start();
    let mut cont = String::new();
    let mut map: HashMap<String, String> = HashMap::new();
    loop {
        let mut url = format!("{}/api/v1/persistentvolumes?limit={PAGE}", t.url);
        if !cont.is_empty() {
            url.push_str("&continue=");
            url.push_str(&encode_continue(&cont));
        }
        let bytes = agent
            .get(&url)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .unwrap()
            .into_body()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap();
        let page: Page = serde_json::from_slice(&bytes).unwrap();
        for pv in page.items {
            let Some(csi) = pv.spec.as_ref().and_then(|s| s.csi.as_ref()) else {
                continue;
            };
            if csi.driver != DRIVER {
                continue;
            }
            if let Some(node) = pv
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ATTACHED_NODE))
            {
                map.insert(csi.volume_handle.clone(), node.clone());
            }
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => cont = c,
            _ => break,
        }
    }
    run.finish(map.len());
}
