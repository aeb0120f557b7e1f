use super::*;
use crate::init::module_config;

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn node_lists_grow_once_and_never_shrink_to_nothing() {
    let mut nodes = list(&["127.0.0.1:5700"]);
    assert!(with_node(&mut nodes, "127.0.0.1:5702"));
    assert!(!with_node(&mut nodes, "127.0.0.1:5702"));
    assert_eq!(nodes, list(&["127.0.0.1:5700", "127.0.0.1:5702"]));
    assert!(without_node(&mut nodes, "127.0.0.1:5700"));
    assert_eq!(nodes, list(&["127.0.0.1:5702"]));
    assert!(!without_node(&mut nodes, "127.0.0.1:9999"));
    // The last node stays: a configuration without a node cannot be loaded.
    assert!(!without_node(&mut nodes, "127.0.0.1:5702"));
    assert_eq!(nodes, list(&["127.0.0.1:5702"]));
}

#[test]
fn client_configs_are_rewritten_in_place_keeping_their_other_fields() {
    let root = std::env::temp_dir().join(format!("hsmctl-node-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    let dir = ClusterDir::new(&root).unwrap();
    let mut app = module_config(&dir, "127.0.0.1:5700", "app");
    app.log_level = Some("debug".into());
    fs::write(dir.pkcs11_toml(), toml_of(&app).unwrap()).unwrap();
    let admin = module_config(&dir, "127.0.0.1:5700", "admin");
    fs::write(dir.admin_toml(), toml_of(&admin).unwrap()).unwrap();

    edit_client_configs(&dir, |nodes| with_node(nodes, "127.0.0.1:5702")).unwrap();
    let app2 = load_config(&dir.pkcs11_toml()).unwrap();
    assert_eq!(app2.nodes, list(&["127.0.0.1:5700", "127.0.0.1:5702"]));
    assert_eq!(app2.log_level.as_deref(), Some("debug"));
    assert_eq!(app2.client_cert, dir.client_cert("app"));
    let admin2 = load_config(&dir.admin_toml()).unwrap();
    assert_eq!(admin2.nodes, app2.nodes);
    assert_eq!(admin2.client_cert, dir.client_cert("admin"));

    edit_client_configs(&dir, |nodes| without_node(nodes, "127.0.0.1:5700")).unwrap();
    assert_eq!(
        load_config(&dir.pkcs11_toml()).unwrap().nodes,
        list(&["127.0.0.1:5702"])
    );
    fs::remove_dir_all(&root).unwrap();
}
