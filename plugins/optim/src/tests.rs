//! Update rules against hand-computed values, and exact resume from saved state.

use voxreg_framework::candle::{Device, Tensor, Var};
use voxreg_framework::config::ConfigDocument;
use voxreg_framework::prelude::*;

use crate::{AdamConfig, RmspropConfig, SgdConfig};

fn scalar(value: f32) -> Var {
    Var::from_tensor(&Tensor::new(&[value], &Device::Cpu).unwrap()).unwrap()
}

fn value_of(var: &Var) -> f32 {
    var.as_tensor().to_vec1::<f32>().unwrap()[0]
}

/// Steps with the gradient of `slope · θ`, i.e. a constant gradient `slope`.
fn run(config: &dyn OptimizerConfig, slope: f32, steps: usize) -> Vec<f32> {
    let theta = scalar(1.0);
    let mut optimizer = config.build(vec![theta.clone()]).unwrap();
    (0..steps)
        .map(|_| {
            let loss = (theta.as_tensor() * slope as f64)
                .unwrap()
                .sum_all()
                .unwrap();
            optimizer.step(&loss.backward().unwrap()).unwrap();
            value_of(&theta)
        })
        .collect()
}

fn close(actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() < 1e-5, "{actual:?} vs {expected:?}");
    }
}

#[test]
fn adam_first_step_moves_by_the_learning_rate() {
    let adam = AdamConfig {
        learning_rate: 0.1,
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-7,
        amsgrad: false,
    };
    // m = 0.2, v = 0.004, step = 0.1·√0.001/0.1, update = m/(√v + ε) → θ = 1 − 0.1.
    // Second step: m = 0.38, v = 0.007996, step = 0.1·√(1−0.999²)/(1−0.81).
    let second =
        0.9 - 0.1 * (1.0f64 - 0.999f64.powi(2)).sqrt() / 0.19 * 0.38 / (0.007996f64.sqrt() + 1e-7);
    close(&run(&adam, 2.0, 2), &[0.9, second as f32]);
}

#[test]
fn sgd_plain_momentum_and_nesterov() {
    let plain = SgdConfig {
        learning_rate: 0.1,
        momentum: 0.0,
        nesterov: false,
    };
    close(&run(&plain, 2.0, 2), &[0.8, 0.6]);
    let momentum = SgdConfig {
        learning_rate: 0.1,
        momentum: 0.9,
        nesterov: false,
    };
    // u = −0.2 → 0.8; u = 0.9·(−0.2) − 0.2 = −0.38 → 0.42.
    close(&run(&momentum, 2.0, 2), &[0.8, 0.42]);
    let nesterov = SgdConfig {
        learning_rate: 0.1,
        momentum: 0.9,
        nesterov: true,
    };
    // θ += μu − lr·g: −0.38 → 0.62; u = −0.38, −0.542 → 0.078.
    close(&run(&nesterov, 2.0, 2), &[0.62, 0.078]);
}

#[test]
fn rmsprop_plain_and_centred() {
    let plain = RmspropConfig {
        learning_rate: 0.1,
        rho: 0.9,
        momentum: 0.0,
        epsilon: 1e-7,
        centered: false,
    };
    // s = 0.4 → θ = 1 − 0.2/√0.4.
    close(&run(&plain, 2.0, 1), &[1.0 - 0.2 / (0.4f32 + 1e-7).sqrt()]);
    let centred = RmspropConfig {
        centered: true,
        ..plain
    };
    // ḡ = 0.2, s − ḡ² = 0.36 → θ = 1 − 0.2/0.6.
    close(
        &run(&centred, 2.0, 1),
        &[1.0 - 0.2 / (0.36f32 + 1e-7).sqrt()],
    );
}

/// Quadratic loss Σ (θ − target)², several variables, one of them without a gradient.
fn train(optimizer: &mut dyn Optimizer, vars: &[Var], steps: usize) {
    let target = Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu).unwrap();
    for _ in 0..steps {
        let loss = (vars[0].as_tensor() - &target)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        optimizer.step(&loss.backward().unwrap()).unwrap();
    }
}

fn fresh_vars() -> Vec<Var> {
    vec![
        Var::from_tensor(&Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu).unwrap()).unwrap(),
        scalar(7.0),
    ]
}

#[test]
fn saved_state_resumes_exactly() {
    let registry = Registry::linked().unwrap();
    for (name, keys) in [
        ("adam", "learning_rate: 0.05\namsgrad: true\n"),
        (
            "sgd",
            "learning_rate: 0.05\nmomentum: 0.8\nnesterov: true\n",
        ),
        (
            "RMSprop",
            "learning_rate: 0.05\nmomentum: 0.5\ncentered: true\n",
        ),
    ] {
        let value = ConfigDocument::parse(keys, "x.yaml".as_ref())
            .unwrap()
            .value;
        let config = registry.decode::<dyn OptimizerConfig>(name, value).unwrap();

        let straight = fresh_vars();
        let mut optimizer = config.build(straight.clone()).unwrap();
        train(&mut *optimizer, &straight, 5);

        let first = fresh_vars();
        let mut optimizer = config.build(first.clone()).unwrap();
        train(&mut *optimizer, &first, 3);
        let state = optimizer.state();
        assert_eq!(state.step, 3);

        let resumed: Vec<Var> = first
            .iter()
            .map(|v| Var::from_tensor(v.as_tensor()).unwrap())
            .collect();
        let mut optimizer = config.build(resumed.clone()).unwrap();
        optimizer.load_state(state).unwrap();
        train(&mut *optimizer, &resumed, 2);

        for (a, b) in straight.iter().zip(&resumed) {
            let (a, b) = (
                a.as_tensor().to_vec1::<f32>().unwrap(),
                b.as_tensor().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(a, b, "{name}: resumed training differs");
        }
        assert_eq!(
            value_of(&straight[1]),
            7.0,
            "{name}: a variable without gradient stays put"
        );
    }
}

#[test]
fn state_for_other_variables_is_refused() {
    let config = AdamConfig {
        learning_rate: 0.1,
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-7,
        amsgrad: false,
    };
    let optimizer = config.build(fresh_vars()).unwrap();
    let state = optimizer.state();
    let mut other = config.build(vec![scalar(1.0), scalar(2.0)]).unwrap();
    let error = other.load_state(state).expect_err("shapes differ");
    assert!(
        error
            .to_string()
            .contains("saved `m.0` has shape [3], the variable [1]"),
        "{error}"
    );
    let mut empty = config.build(fresh_vars()).unwrap();
    let error = empty
        .load_state(OptimizerState::default())
        .expect_err("state is empty");
    assert!(
        error.to_string().contains("saved state lacks `m.0`"),
        "{error}"
    );
}

#[test]
fn nonsense_rates_are_rejected() {
    let config = SgdConfig {
        learning_rate: -1.0,
        momentum: 0.0,
        nesterov: false,
    };
    let error = config
        .build(vec![scalar(1.0)])
        .err()
        .expect("negative learning rate");
    assert!(
        error
            .to_string()
            .contains("`learning_rate` must be a finite number ≥ 0, got -1"),
        "{error}"
    );
    let config = AdamConfig {
        learning_rate: 0.1,
        beta_1: 1.5,
        beta_2: 0.999,
        epsilon: 1e-7,
        amsgrad: false,
    };
    assert!(config.build(vec![scalar(1.0)]).is_err());
}
