//! Rebuild contender "ours": the controller's own rebuild
//! (`AttachmentManager::rebuild`) against the page server in DIR.

fn main() {
    rds_bench::rebuild_ours();
}
