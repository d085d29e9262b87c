//! Rebuild contender "floor": the same pages over the same TLS (ureq,
//! rustls), parsed into `serde::de::IgnoredAny` — the least any client can
//! do. Reports the pages read as its count.

use rds_bench::{Run, Target};

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
    let agent = rds_bench::agent(&t.ca_pem);
    let run = Run::start();
    let mut cont = String::new();
    let mut pages = 0;
    loop {
        let bytes = rds_bench::fetch_page(&agent, &t.url, &cont);
        let page: Page = serde_json::from_slice(&bytes).unwrap();
        pages += 1;
        match page.metadata.next {
            Some(c) if !c.is_empty() => cont = c,
            _ => break,
        }
    }
    run.finish(pages);
}
