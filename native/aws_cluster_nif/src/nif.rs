//! `nif_*` NIFs: what this build of the NIF holds.

/// `nif_services()`: the services this build can call, as binaries: EC2 always, the
/// others (AutoScaling, ECS, the registry's PostgreSQL and DynamoDB) as cargo features
/// (`AWS_CLUSTER_NIF_SERVICES`, native/build.exs).
#[rustler::nif]
fn nif_services() -> Vec<&'static str> {
    let mut services = vec!["ec2"];
    if cfg!(feature = "autoscaling") {
        services.push("autoscaling");
    }
    if cfg!(feature = "ecs") {
        services.push("ecs");
    }
    if cfg!(feature = "postgres") {
        services.push("postgres");
    }
    if cfg!(feature = "dynamodb") {
        services.push("dynamodb");
    }
    services
}
