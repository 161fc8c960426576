//! Prints the four `openstack.org/v1` CRDs as one multi-document YAML stream:
//! `cargo run -p kuryr-controller --bin crdgen > deploy/crds/kuryr-crds.yaml`.

fn main() -> anyhow::Result<()> {
    print!("{}", kuryr_controller::runtime::crds::to_yaml()?);
    Ok(())
}
