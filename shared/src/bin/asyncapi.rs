//! Prints the AsyncAPI document of the saga's Kafka side (see `shared::asyncapi`):
//! `cargo run -p shared --bin asyncapi > docs/asyncapi.yaml`.

fn main() {
    print!("{}", shared::asyncapi::to_yaml(&shared::asyncapi::document()));
}
