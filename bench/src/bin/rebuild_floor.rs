//! Rebuild contender "floor": the same pages over the same TLS (ureq,
//! rustls), parsed into `serde::de::IgnoredAny` — the least any client can
//! do. Reports the pages read as its count.

use rds_bench::{encode_continue, Run, Target, PAGE, TOKEN};

#[derive(serde::Deserialize)]
struct Page {
    metadata: Meta,
    #[allow(dead_code)]
    items: serde::de::IgnoredAny,
}

#[derive(serde::Deserialize)]
struct Meta {
    #[serde(default, rename = "continue")]
    next: Option<String>,
}

fn main() {
    let t = Target::from_args();
    let agent = rds_bench_agent(&t.ca_pem);
    let run = Run::start();
    let mut cont = String::new();
    let mut pages = 0;
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
        pages += 1;
        match page.metadata.next {
            Some(c) if !c.is_empty() => cont = c,
            _ => break,
        }
    }
    run.finish(pages);
}

fn rds_bench_agent(ca_pem: &str) -> ureq::Agent {
    let certs: Vec<_> = ureq::tls::parse_pem(ca_pem.as_bytes())
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build();
    ureq::Agent::config_builder().tls_config(tls).build().into()
}
