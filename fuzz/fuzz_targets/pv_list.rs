//! A LIST page of PersistentVolumes, as the API server (or anything
//! pretending to be it) might send: decoding must never panic, every item
//! is either decoded or named as skipped, and the answer arriving in
//! pieces (cut where the input's first bytes say) decodes exactly as it
//! does whole: the same items, token and error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rds_csi_controller::kube::{
    decode_page, decode_pieces, ListItem, Malformed, Page, PvSummary, VolumeAttachmentSummary,
};

fn pieces<'a>(cuts: &[u8], body: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = body;
    for &c in cuts {
        let n = (c as usize).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

fn view<T>(r: Result<Page<T>, Malformed>) -> Result<(Vec<T>, Vec<String>, Option<String>), String> {
    r.map(|p| (p.items, p.skipped, p.next))
        .map_err(|e| e.to_string())
}

fn same<T: ListItem + PartialEq + std::fmt::Debug>(cuts: &[u8], body: &[u8]) {
    let whole = decode_page::<T>(body);
    let split = decode_pieces::<T>(pieces(cuts, body));
    assert_eq!(view(whole), view(split));
}

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = decode_page::<PvSummary>(data) {
        for pv in &page.items {
            assert!(pv.name.len() <= data.len());
        }
    }
    // First byte: how many of the next bytes are piece lengths.
    let (n, rest) = match data.split_first() {
        Some((n, rest)) => ((*n as usize % 8).min(rest.len()), rest),
        None => (0, data),
    };
    let (cuts, body) = rest.split_at(n);
    same::<PvSummary>(cuts, body);
    same::<VolumeAttachmentSummary>(cuts, body);
});
