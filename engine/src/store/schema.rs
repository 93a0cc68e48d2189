//! Diesel schema, kept in step with `migrations/{sqlite,mysql,postgres}` (checked by the
//! `schema_matches_every_backend` test, which loads every table on every backend).

diesel::table! {
    users (id) {
        id -> BigInt,
        name -> Text,
        email -> Text,
        password_hash -> Text,
        created_at -> BigInt,
        token_generation -> BigInt,
    }
}

diesel::table! {
    actuators (id) {
        id -> BigInt,
        creator -> Text,
        name -> Text,
        kind -> Text,
        spec -> Text,
        tunnel_client_id -> Nullable<Text>,
        tunnel_token_hash -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    actuator_tags (actuator_id, tag) {
        actuator_id -> BigInt,
        creator -> Text,
        tag -> Text,
    }
}

diesel::table! {
    pipeline_definitions (id) {
        id -> BigInt,
        creator -> Text,
        name -> Text,
        version -> Text,
        latest -> Bool,
        content -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    trigger_definitions (id) {
        id -> BigInt,
        creator -> Text,
        name -> Text,
        event_name -> Text,
        event_version -> Text,
        event_creator -> Text,
        content -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    events (id) {
        id -> BigInt,
        creator -> Text,
        name -> Text,
        version -> Text,
        content -> Text,
        status -> Text,
        message -> Text,
        owner -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    event_triggers (id) {
        id -> BigInt,
        event_id -> BigInt,
        trigger_id -> BigInt,
        trigger_name -> Text,
        pipeline_index -> Integer,
        pipeline_image -> Text,
        status -> Text,
        reason -> Text,
        pipeline_id -> Nullable<BigInt>,
        created_at -> BigInt,
    }
}

diesel::table! {
    pipelines (id) {
        id -> BigInt,
        creator -> Text,
        event_id -> Nullable<BigInt>,
        event_trigger_id -> Nullable<BigInt>,
        definition_creator -> Text,
        definition_name -> Text,
        definition_version -> Text,
        trigger_name -> Text,
        event_name -> Text,
        event_version -> Text,
        event_creator -> Text,
        status -> Text,
        definition_snapshot -> Text,
        event_snapshot -> Text,
        trigger_snapshot -> Text,
        inputs -> Text,
        contexts -> Text,
        outputs -> Text,
        error -> Text,
        owner -> Text,
        lease_until -> BigInt,
        created_at -> BigInt,
        started_at -> Nullable<BigInt>,
        ended_at -> Nullable<BigInt>,
        updated_at -> BigInt,
        lease_epoch -> BigInt,
    }
}

diesel::table! {
    tasks (id) {
        id -> BigInt,
        pipeline_id -> BigInt,
        parent_task_id -> BigInt,
        alias -> Text,
        task_type -> Text,
        status -> Text,
        actuator_name -> Text,
        actuator_tag -> Text,
        inputs -> Text,
        outputs -> Text,
        error -> Text,
        contexts -> Text,
        definition_snapshot -> Text,
        exit_code -> Nullable<Integer>,
        job_id -> Text,
        secret_hash -> Text,
        timeout_secs -> BigInt,
        file_sizes -> Nullable<Text>,
        created_at -> BigInt,
        started_at -> Nullable<BigInt>,
        ended_at -> Nullable<BigInt>,
        updated_at -> BigInt,
    }
}

diesel::table! {
    machines (id) {
        id -> BigInt,
        owner -> Text,
        client_id -> Text,
        label -> Text,
        address -> Text,
        version -> Text,
        run_as -> Text,
        first_seen -> BigInt,
        last_seen -> BigInt,
        server -> Text,
    }
}

diesel::table! {
    commands (id) {
        id -> BigInt,
        owner -> Text,
        name -> Text,
        machine_pattern -> Text,
        command -> Text,
        workspace -> Text,
        timeout_secs -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    command_results (id) {
        id -> BigInt,
        command_id -> BigInt,
        machine_label -> Text,
        client_id -> Text,
        status -> Text,
        exit_code -> Nullable<Integer>,
        msg -> Text,
        output -> Text,
        started_at -> BigInt,
        deadline_at -> BigInt,
        ended_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    servers (node) {
        node -> Integer,
        instance_id -> Text,
        address -> Text,
        version -> Text,
        started_at -> BigInt,
        heartbeat_at -> BigInt,
        draining -> Bool,
        clients -> Integer,
    }
}

diesel::table! {
    cluster_values (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    cluster_counters (name) {
        name -> Text,
        value -> BigInt,
    }
}

diesel::table! {
    run_signals (id) {
        id -> BigInt,
        owner -> Text,
        run_id -> BigInt,
        task_id -> BigInt,
        kind -> Text,
        created_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    users,
    actuators,
    actuator_tags,
    pipeline_definitions,
    trigger_definitions,
    events,
    event_triggers,
    pipelines,
    tasks,
    machines,
    commands,
    command_results,
    servers,
    cluster_values,
    cluster_counters,
    run_signals,
);
