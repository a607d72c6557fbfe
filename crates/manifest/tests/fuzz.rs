//! Fuzz target: manifest decoding and validation (YAML or JSON, a Pod) from the bytes of a
//! manifest file. Seeds: the manifests of `testdata/` (valid, invalid, kubeadm's). Properties:
//! no panic; a rejection has a message; an accepted pod has a name, a namespace and a uid, and
//! its decoding is deterministic.

#[path = "../../../fuzz/mutate.rs"]
mod mutate;

use staticlet_manifest::{load, Origin};

#[test]
fn manifest_decode_and_validate() {
    let seeds = mutate::seeds(&["crates/manifest/testdata"]);
    let runs = mutate::Runs::new("manifest_decode_and_validate");
    let origin = Origin::File("/etc/kubernetes/manifests/fuzz.yaml".into());
    bolero::check!()
        .with_iterations(mutate::iterations(20_000))
        .with_max_len(mutate::MAX_RECIPE)
        .for_each(|recipe: &[u8]| {
            runs.hit();
            let data = mutate::mutate(&seeds, recipe);
            match load(&data, &origin, "node-1") {
                Ok(pod) => {
                    runs.accept();
                    assert!(
                        !pod.name.is_empty() && !pod.namespace.is_empty() && !pod.uid.is_empty()
                    );
                    let again = load(&data, &origin, "node-1").expect("decoding is deterministic");
                    assert_eq!(again.uid, pod.uid);
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        });
}
