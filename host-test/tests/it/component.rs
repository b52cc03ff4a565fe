//! The component itself: what it imports, and how it fails.

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

#[test]
fn the_component_imports_nothing() {
    let mut config = Config::new();
    config.wasm_component_model(true);
    let engine = Engine::new(&config).expect("engine");
    let component = Component::from_binary(&engine, newterms_host::COMPONENT).expect("component");
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    assert!(imports.is_empty(), "the component imports {imports:?}");
    // And it runs with an empty linker (Runtime uses one).
    let opened =
        newterms_host::Session::open(crate::backend::runtime(), "", "").expect("instantiate");
    assert!(opened.is_ok());
}

#[test]
fn a_load_error_names_the_key_through_the_component() {
    let Err(e) = newterms_host::Session::open(crate::backend::runtime(), "", "max_terms = -1")
        .expect("instantiate")
    else {
        panic!("max_terms = -1 loaded");
    };
    assert_eq!(e.key.as_deref(), Some("newterms.max_terms"));
    assert!(e.message.contains("at least 1"), "{}", e.message);
}
