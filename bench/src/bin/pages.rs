//! `rds-bench-pages --pvs N --dir DIR`: serves a PersistentVolume list of
//! N PVs over HTTPS on loopback, as kube-apiserver sends it (chunked JSON
//! pages of 500 with continue tokens), from pages rendered once into
//! memory, so serving costs a write and nothing else. Writes `url`,
//! `ca.crt` and `kubeconfig` into DIR, prints `ready`, serves until killed.
//!
//! The PVs are provisioned CSI volumes with the metadata a cluster gives
//! them (finalizers, managed fields): half of this driver (half of those
//! attached), half of another.

use std::{
    collections::HashMap,
    io::{BufReader, Write},
    net::TcpListener,
    sync::Arc,
};

use rds_bench::{ATTACHED_NODE, DRIVER, PAGE, TOKEN};

fn pv(i: usize) -> String {
    let ours = i.is_multiple_of(2);
    let name = format!("pvc-{:08x}-7c1e-4b5a-9d3f-{:012x}", i, i * 7919);
    let driver = if ours {
        DRIVER
    } else {
        "other.csi.example.com"
    };
    let attached = if ours && i.is_multiple_of(4) {
        format!(
            r#","{ATTACHED_NODE}":"node-{}","rds.csi.srvlab.io/attached-at":"2024-01-02T03:04:05.123456Z""#,
            i % 7
        )
    } else {
        String::new()
    };
    format!(
        concat!(
            r#"{{"metadata":{{"name":"{name}","uid":"0f3c{i:04x}-1b2a-4c5d-8e9f-{i:012x}","resourceVersion":"{rv}","creationTimestamp":"2024-01-02T03:04:05Z","#,
            r#""annotations":{{"pv.kubernetes.io/provisioned-by":"{driver}","volume.kubernetes.io/provisioner-deletion-secret-name":"","volume.kubernetes.io/provisioner-deletion-secret-namespace":""{attached}}},"#,
            r#""finalizers":["external-provisioner.volume.kubernetes.io/finalizer","kubernetes.io/pv-protection","external-attacher/{driver_dashed}"],"#,
            r#""managedFields":[{{"manager":"csi-provisioner","operation":"Update","apiVersion":"v1","time":"2024-01-02T03:04:05Z","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:annotations":{{".":{{}},"f:pv.kubernetes.io/provisioned-by":{{}},"f:volume.kubernetes.io/provisioner-deletion-secret-name":{{}},"f:volume.kubernetes.io/provisioner-deletion-secret-namespace":{{}}}},"f:finalizers":{{".":{{}},"v:\"external-provisioner.volume.kubernetes.io/finalizer\"":{{}}}}}},"f:spec":{{"f:accessModes":{{}},"f:capacity":{{".":{{}},"f:storage":{{}}}},"f:claimRef":{{".":{{}},"f:apiVersion":{{}},"f:kind":{{}},"f:name":{{}},"f:namespace":{{}},"f:resourceVersion":{{}},"f:uid":{{}}}},"f:csi":{{".":{{}},"f:driver":{{}},"f:fsType":{{}},"f:volumeAttributes":{{".":{{}},"f:nqn":{{}},"f:nvmeAddress":{{}},"f:nvmePort":{{}},"f:volumePath":{{}}}},"f:volumeHandle":{{}}}},"f:persistentVolumeReclaimPolicy":{{}},"f:storageClassName":{{}},"f:volumeMode":{{}}}}}}}},"#,
            r#"{{"manager":"kube-controller-manager","operation":"Update","apiVersion":"v1","time":"2024-01-02T03:04:05Z","fieldsType":"FieldsV1","fieldsV1":{{"f:status":{{"f:phase":{{}}}}}},"subresource":"status"}},"#,
            r#"{{"manager":"csi-attacher","operation":"Update","apiVersion":"v1","time":"2024-01-02T03:04:06Z","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:finalizers":{{"v:\"external-attacher/{driver_dashed}\"":{{}}}}}}}}}}]}},"#,
            r#""spec":{{"capacity":{{"storage":"10Gi"}},"csi":{{"driver":"{driver}","volumeHandle":"{name}","fsType":"ext4","volumeAttributes":{{"nqn":"nqn.2000-02.com.mikrotik:{name}","nvmeAddress":"10.0.0.2","nvmePort":"4420","volumePath":"/storage-pool/metal-csi/{name}.img"}}}},"#,
            r#""accessModes":["ReadWriteOnce"],"claimRef":{{"kind":"PersistentVolumeClaim","namespace":"default","name":"data-{i}","uid":"5e1d{i:04x}-2c3b-4d5e-9f0a-{i:012x}","apiVersion":"v1","resourceVersion":"{rv}"}},"#,
            r#""persistentVolumeReclaimPolicy":"Delete","storageClassName":"rds-nvme","volumeMode":"Filesystem"}},"#,
            r#""status":{{"phase":"Bound","lastPhaseTransitionTime":"2024-01-02T03:04:05Z"}}}}"#
        ),
        name = name,
        i = i,
        rv = 1000 + i,
        driver = driver,
        driver_dashed = driver.replace('.', "-"),
        attached = attached,
    )
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every page as the full HTTP response (head and chunked body), and the
/// continue token that asks for each page after the first.
fn render(n: usize) -> (Vec<Vec<u8>>, HashMap<String, usize>) {
    let rv = 1000 + n;
    let pages = n.div_ceil(PAGE).max(1);
    let mut out = Vec::with_capacity(pages);
    let mut tokens = HashMap::new();
    let token = |p: usize| {
        base64(
            format!(
                r#"{{"v":"meta.k8s.io/v1","rv":{rv},"start":"{}\u0000"}}"#,
                p * PAGE
            )
            .as_bytes(),
        )
    };
    for p in 0..pages {
        let items: Vec<String> = (p * PAGE..((p + 1) * PAGE).min(n)).map(pv).collect();
        let next = if p + 1 < pages {
            let t = token(p + 1);
            tokens.insert(t.clone(), p + 1);
            format!(
                r#","continue":"{t}","remainingItemCount":{}"#,
                n - (p + 1) * PAGE
            )
        } else {
            String::new()
        };
        let body = format!(
            r#"{{"kind":"PersistentVolumeList","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}"{next}}},"items":[{}]}}"#,
            items.join(",")
        );
        let mut resp = b"HTTP/1.1 200 OK\r\nAudit-Id: 6a1f0c2e-bench\r\nCache-Control: no-cache, private\r\nContent-Type: application/json\r\nX-Kubernetes-Pf-Flowschema-Uid: bench\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for chunk in body.as_bytes().chunks(32 * 1024) {
            resp.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            resp.extend_from_slice(chunk);
            resp.extend_from_slice(b"\r\n");
        }
        resp.extend_from_slice(b"0\r\n\r\n");
        out.push(resp);
    }
    (out, tokens)
}

fn main() {
    let mut n = 10_000;
    let mut dir = std::path::PathBuf::from(".");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pvs" => n = args.next().unwrap().parse().unwrap(),
            "--dir" => dir = args.next().unwrap().into(),
            other => panic!("unknown argument {other}"),
        }
    }
    let (pages, tokens) = render(n);
    let pages = Arc::new(pages);
    let tokens = Arc::new(tokens);
    let pki = kube_emulator::tls::Pki::new("rds-bench-pages");
    let config = pki.server_config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    std::fs::write(dir.join("url"), &url).unwrap();
    std::fs::write(dir.join("ca.crt"), &pki.ca_pem).unwrap();
    std::fs::write(
        dir.join("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: bench\nclusters:\n- name: bench\n  cluster:\n    server: {url}\n    certificate-authority: ca.crt\ncontexts:\n- name: bench\n  context: {{cluster: bench, user: bench}}\nusers:\n- name: bench\n  user:\n    token: {TOKEN}\n"
        ),
    )
    .unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let not_found =
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    for tcp in listener.incoming().flatten() {
        let (pages, tokens, config) = (pages.clone(), tokens.clone(), config.clone());
        std::thread::spawn(move || {
            let _ = tcp.set_nodelay(true);
            let Some((mut tls, _)) = kube_emulator::tls::accept(config, tcp) else {
                return;
            };
            loop {
                let req = {
                    let mut r = BufReader::new(&mut tls);
                    match kube_emulator::http::read_request(&mut r) {
                        Ok(Some(req)) => req,
                        _ => return,
                    }
                };
                let page = match (req.path.as_str(), req.query("continue")) {
                    ("/api/v1/persistentvolumes", None | Some("")) => Some(0),
                    ("/api/v1/persistentvolumes", Some(t)) => tokens.get(t).copied(),
                    _ => None,
                };
                let bytes: &[u8] = match page {
                    Some(p) => &pages[p],
                    None => not_found,
                };
                if tls.write_all(bytes).and_then(|()| tls.flush()).is_err() {
                    return;
                }
            }
        });
    }
}
