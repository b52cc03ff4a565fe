//! Turns the guest core module into a component and embeds it in the host.
//!
//! The guest is built by `.ci/build-guest` (wasm32-unknown-unknown, profile `guest`); this
//! script wraps it with the component type its wit-bindgen section describes. Without a
//! guest module the host still compiles (for `cargo clippy`, say) and says at run time
//! how to build one.

use std::path::PathBuf;

// The checks in it are for the tests.
#[allow(dead_code)]
#[path = "src/wasm_entry.rs"]
mod wasm_entry;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(newterms_no_guest)");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let module = guest_path(
        &manifest,
        "NEWTERMS_GUEST_MODULE",
        "wasm32-unknown-unknown/guest/newterms.wasm",
    );
    println!("cargo:rerun-if-changed={}", module.display());
    embed_fluentbit_module(&manifest);
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default())
        .join("newterms.component.wasm");
    let component = match std::fs::read(&module) {
        Ok(bytes) => {
            let encoded = wit_component::ComponentEncoder::default()
                .module(&bytes)
                .and_then(|e| e.validate(true).encode());
            match encoded {
                Ok(c) => c,
                Err(e) => panic!("cannot make a component of {}: {e:#}", module.display()),
            }
        }
        Err(_) => {
            println!(
                "cargo:warning=no guest module at {}: run .ci/build-guest; the host will say so at run time",
                module.display()
            );
            println!("cargo:rustc-cfg=newterms_no_guest");
            Vec::new()
        }
    };
    if let Err(e) = std::fs::write(&out, component) {
        panic!("cannot write {}: {e}", out.display());
    }
}

/// The Fluent Bit core module (wasm32-wasip1), embedded with its exports wrapped so that
/// each starts at the top of the shadow stack (see `src/wasm_entry.rs`).
fn embed_fluentbit_module(manifest: &std::path::Path) {
    let module = guest_path(
        manifest,
        "NEWTERMS_FLUENTBIT_MODULE",
        "wasm32-wasip1/guest/newterms.wasm",
    );
    println!("cargo:rerun-if-changed={}", module.display());
    let bytes = match std::fs::read(&module) {
        Ok(raw) => match wasm_entry::wrap_exports(&raw) {
            Ok(wrapped) => wrapped,
            Err(e) => panic!("cannot wrap the exports of {}: {e}", module.display()),
        },
        Err(_) => {
            println!(
                "cargo:warning=no Fluent Bit module at {}: run .ci/build-guest",
                module.display()
            );
            Vec::new()
        }
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default())
        .join("newterms-fluentbit.wasm");
    if let Err(e) = std::fs::write(&out, bytes) {
        panic!("cannot write {}: {e}", out.display());
    }
}

/// A guest artifact: the path in `env_var` when set, else `rel` under the target directory.
fn guest_path(manifest: &std::path::Path, env_var: &str, rel: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={env_var}");
    match std::env::var_os(env_var) {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("../target"))
            .join(rel),
    }
}
