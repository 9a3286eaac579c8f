//! `perceptual`: the LPIPS perceptual distance (Zhang et al. 2018, the `lpips` package's
//! version 0.1) that atlalign trains with (`perceptual_loss_net-lin_vgg`, …), on VGG16 or
//! AlexNet features whose weights the user supplies as a safetensors file.
//!
//! Grey images in `[0, 1]` are mapped to `[−1, 1]` and repeated to three channels (atlalign's
//! `PerceptualLoss`), then LPIPS's scaling layer `(x − shift) / scale` is applied; the
//! network's five taps (VGG16's relu1_2 … relu5_3, AlexNet's relu1 … relu5) are unit-normalised
//! over channels, `x / (‖x‖₂ + 10⁻¹⁰)`, and the squared differences of the two images' taps
//! are reduced per tap: `net-lin` by LPIPS's 1 × 1 linear weights (no bias), `net` by a sum
//! over channels; then averaged over space and summed over the taps:
//! `d = Σ_l mean_hw(w_l · (ŷ_l − ŷ0_l)²)`.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use voxreg_framework::candle::{self, DType, Device, Tensor};
use voxreg_framework::ops;
use voxreg_framework::prelude::*;

use crate::kinds::{ImageLoss, Images};
use crate::util::check_pair;

const NAME: &str = "image_loss `perceptual`";

/// LPIPS's scaling layer (version 0.1).
const SHIFT: [f64; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f64; 3] = [0.458, 0.448, 0.450];

/// The epsilon of LPIPS's `normalize_tensor`.
const NORMALISE_EPSILON: f64 = 1.0e-10;

/// The feature network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LpipsNet {
    /// AlexNet (LPIPS's default).
    #[default]
    Alex,
    /// VGG16 (atlalign's documented best models).
    Vgg,
}

/// How the taps' squared differences are reduced over channels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LpipsModel {
    /// LPIPS's learned 1 × 1 linear weights (`lpips=True`).
    #[default]
    #[serde(rename = "net-lin")]
    NetLin,
    /// A plain sum over channels (`lpips=False`).
    #[serde(rename = "net")]
    Net,
}

/// `perceptual`: the LPIPS distance between the fixed and the warped image (2D).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerceptualConfig {
    /// A safetensors file with the network's weights under the `lpips` package's names
    /// (`net.slice<k>.<i>.weight` / `.bias`, `lin<k>.model.1.weight`), as
    /// `scripts/lpips_weights.py` writes it from torchvision's ImageNet weights and the
    /// package's linear weights. Relative paths are taken from the working directory.
    pub weights: PathBuf,
    /// `alex` (default) or `vgg`.
    #[serde(default)]
    pub net: LpipsNet,
    /// `net-lin` (default) or `net`.
    #[serde(default)]
    pub model: LpipsModel,
}

/// One layer of the feature network.
#[derive(Clone, Copy, Debug)]
enum Layer {
    /// A convolution `(cin → cout, kernel, stride, padding)` with bias, then ReLU; the
    /// `usize` is its index in torchvision's `features`.
    Conv {
        index: usize,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// Max pooling `(kernel, stride)`.
    Pool { kernel: usize, stride: usize },
}

fn conv(
    index: usize,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Layer {
    Layer::Conv {
        index,
        cin,
        cout,
        kernel,
        stride,
        padding,
    }
}

/// The five slices of the network, each ending at a tap (torchvision's layer indices).
fn slices(net: LpipsNet) -> Vec<Vec<Layer>> {
    let pool = |kernel, stride| Layer::Pool { kernel, stride };
    match net {
        LpipsNet::Vgg => vec![
            vec![conv(0, 3, 64, 3, 1, 1), conv(2, 64, 64, 3, 1, 1)],
            vec![
                pool(2, 2),
                conv(5, 64, 128, 3, 1, 1),
                conv(7, 128, 128, 3, 1, 1),
            ],
            vec![
                pool(2, 2),
                conv(10, 128, 256, 3, 1, 1),
                conv(12, 256, 256, 3, 1, 1),
                conv(14, 256, 256, 3, 1, 1),
            ],
            vec![
                pool(2, 2),
                conv(17, 256, 512, 3, 1, 1),
                conv(19, 512, 512, 3, 1, 1),
                conv(21, 512, 512, 3, 1, 1),
            ],
            vec![
                pool(2, 2),
                conv(24, 512, 512, 3, 1, 1),
                conv(26, 512, 512, 3, 1, 1),
                conv(28, 512, 512, 3, 1, 1),
            ],
        ],
        LpipsNet::Alex => vec![
            vec![conv(0, 3, 64, 11, 4, 2)],
            vec![pool(3, 2), conv(3, 64, 192, 5, 1, 2)],
            vec![pool(3, 2), conv(6, 192, 384, 3, 1, 1)],
            vec![conv(8, 384, 256, 3, 1, 1)],
            vec![conv(10, 256, 256, 3, 1, 1)],
        ],
    }
}

/// The weights of one convolution.
struct ConvWeights {
    weight: Tensor,
    bias: Tensor,
}

struct Perceptual {
    model: LpipsModel,
    slices: Vec<Vec<Layer>>,
    /// Per slice, its convolutions' weights in order.
    convs: Vec<Vec<ConvWeights>>,
    /// Per tap, the linear weights `(1, C, 1, 1)` (`net-lin`).
    lins: Vec<Tensor>,
    /// The scaling layer's shift and scale, `(1, 3, 1, 1)` each.
    shift: Tensor,
    scale: Tensor,
}

/// Takes `key` from the file's tensors, checking its shape; errors name the file and key.
fn take(
    tensors: &mut HashMap<String, Tensor>,
    key: &str,
    shape: &[usize],
    file: &std::path::Path,
) -> Result<Tensor, ComponentError> {
    let tensor = tensors.remove(key).ok_or_else(|| {
        ComponentError::invalid(
            NAME,
            format!(
                "{} has no weight `{key}`: write the file with scripts/lpips_weights.py for this `net`",
                file.display()
            ),
        )
    })?;
    if tensor.dims() != shape {
        return Err(ComponentError::invalid(
            NAME,
            format!(
                "{}: weight `{key}` is {:?}, the network needs {shape:?}",
                file.display(),
                tensor.dims()
            ),
        ));
    }
    tensor
        .to_dtype(DType::F32)
        .map_err(|e| ComponentError::tensor(format!("{NAME}: reading `{key}`"), e))
}

impl Perceptual {
    fn load(config: &PerceptualConfig) -> Result<Self, ComponentError> {
        let file = &config.weights;
        if !file.is_file() {
            return Err(ComponentError::invalid(
                NAME,
                format!(
                    "weights file {} does not exist: make it once with scripts/lpips_weights.py (needs PyTorch)",
                    file.display()
                ),
            ));
        }
        let mut tensors = candle::safetensors::load(file, &Device::Cpu).map_err(|e| {
            ComponentError::invalid(
                NAME,
                format!("{} is not a safetensors file: {e}", file.display()),
            )
        })?;
        let slices = slices(config.net);
        let mut convs = Vec::with_capacity(slices.len());
        let mut lins = Vec::with_capacity(slices.len());
        for (k, slice) in slices.iter().enumerate() {
            let mut weights = Vec::new();
            let mut channels = 0;
            for layer in slice {
                if let Layer::Conv {
                    index,
                    cin,
                    cout,
                    kernel,
                    ..
                } = *layer
                {
                    let prefix = format!("net.slice{}.{index}", k + 1);
                    weights.push(ConvWeights {
                        weight: take(
                            &mut tensors,
                            &format!("{prefix}.weight"),
                            &[cout, cin, kernel, kernel],
                            file,
                        )?,
                        bias: take(&mut tensors, &format!("{prefix}.bias"), &[cout], file)?,
                    });
                    channels = cout;
                }
            }
            if config.model == LpipsModel::NetLin {
                lins.push(take(
                    &mut tensors,
                    &format!("lin{k}.model.1.weight"),
                    &[1, channels, 1, 1],
                    file,
                )?);
            }
            convs.push(weights);
        }
        // The package stores its scaling constants as float32 buffers: use the file's values
        // when it has them (the converter writes them), LPIPS v0.1's decimals otherwise.
        let constant = |key: &str, values: [f64; 3], tensors: &mut HashMap<String, Tensor>| {
            if tensors.contains_key(key) {
                take(tensors, key, &[1, 3, 1, 1], file)
            } else {
                Tensor::new(&values, &Device::Cpu)
                    .and_then(|t| t.to_dtype(DType::F32)?.reshape((1, 3, 1, 1)))
                    .map_err(|e| ComponentError::tensor(format!("{NAME}: `{key}`"), e))
            }
        };
        let shift = constant("scaling_layer.shift", SHIFT, &mut tensors)?;
        let scale = constant("scaling_layer.scale", SCALE, &mut tensors)?;
        Ok(Self {
            model: config.model,
            slices,
            convs,
            lins,
            shift,
            scale,
        })
    }

    /// The five taps of the network for images `(N, 3, H, W)` (already scaled).
    fn taps(&self, x: &Tensor) -> candle::Result<Vec<Tensor>> {
        let mut x = x.clone();
        let mut taps = Vec::with_capacity(self.slices.len());
        for (slice, weights) in self.slices.iter().zip(&self.convs) {
            let mut weights = weights.iter();
            for layer in slice {
                x = match *layer {
                    Layer::Conv {
                        stride, padding, ..
                    } => {
                        let w = weights
                            .next()
                            .ok_or_else(|| candle::Error::Msg("missing convolution".into()))?;
                        let (weight, bias) =
                            (w.weight.to_dtype(x.dtype())?, w.bias.to_dtype(x.dtype())?);
                        ops::conv(
                            &x,
                            &weight,
                            Some(&bias),
                            &[stride; 2],
                            &[(padding, padding); 2],
                        )?
                        .relu()?
                    }
                    Layer::Pool { kernel, stride } => {
                        ops::max_pool(&x, &[kernel; 2], &[stride; 2], &[(0, 0); 2])?
                    }
                };
            }
            taps.push(x.clone());
        }
        Ok(taps)
    }

    /// `(N, 1, H, W)` in `[0, 1]` → LPIPS's input `(N, 3, H, W)`.
    fn input(&self, x: &Tensor) -> candle::Result<Tensor> {
        let grey = ((x * 2.0)? - 1.0)?;
        let rgb = Tensor::cat(&[&grey, &grey, &grey], 1)?;
        rgb.broadcast_sub(&self.shift.to_dtype(x.dtype())?)?
            .broadcast_div(&self.scale.to_dtype(x.dtype())?)
    }
}

/// `x / (‖x‖₂ over channels + ε)`.
fn unit_normalised(x: &Tensor) -> candle::Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(1)?.sqrt()? + NORMALISE_EPSILON)?;
    x.broadcast_div(&norm)
}

impl ImageLoss for Perceptual {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        check_pair(NAME, 2, fixed, warped)?;
        let (a, b) = (
            self.taps(&self.input(fixed)?)?,
            self.taps(&self.input(warped)?)?,
        );
        let mut total: Option<Tensor> = None;
        for (k, (ta, tb)) in a.iter().zip(&b).enumerate() {
            let diff = (unit_normalised(ta)? - unit_normalised(tb)?)?.sqr()?;
            let reduced = match self.model {
                LpipsModel::NetLin => {
                    let lin = self.lins[k].to_dtype(diff.dtype())?;
                    ops::conv(&diff, &lin, None, &[1, 1], &[(0, 0); 2])?
                }
                LpipsModel::Net => diff.sum_keepdim(1)?,
            };
            let term = reduced.flatten_from(1)?.mean(1)?;
            total = Some(match total {
                Some(sum) => (sum + term)?,
                None => term,
            });
        }
        total.ok_or_else(|| candle::Error::Msg(format!("{NAME}: the network has no taps")))
    }
}

#[typetag::serialize(name = "perceptual")]
impl ImageLossConfig for PerceptualConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        if spatial_dims != 2 {
            return Err(ComponentError::invalid(
                NAME,
                format!("LPIPS's networks are 2D; the images have {spatial_dims} spatial axes"),
            ));
        }
        Ok(Box::new(Images(Perceptual::load(self)?, NAME)))
    }
}

register_component!(
    image_loss,
    "perceptual",
    PerceptualConfig,
    "LPIPS perceptual distance (VGG16 / AlexNet features, net-lin or net), weights from a safetensors file"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Random AlexNet LPIPS weights (uniform ±0.05, linear weights ≥ 0) in a safetensors file.
    fn alex_weights(dir: &std::path::Path, skip: Option<&str>) -> PathBuf {
        let mut tensors = HashMap::new();
        for (k, slice) in slices(LpipsNet::Alex).iter().enumerate() {
            let mut channels = 0;
            for layer in slice {
                if let Layer::Conv {
                    index,
                    cin,
                    cout,
                    kernel,
                    ..
                } = *layer
                {
                    let prefix = format!("net.slice{}.{index}", k + 1);
                    let w = Tensor::rand(-0.05f32, 0.05, (cout, cin, kernel, kernel), &Device::Cpu)
                        .unwrap();
                    tensors.insert(format!("{prefix}.weight"), w);
                    tensors.insert(
                        format!("{prefix}.bias"),
                        Tensor::zeros(cout, DType::F32, &Device::Cpu).unwrap(),
                    );
                    channels = cout;
                }
            }
            let lin = Tensor::rand(0f32, 0.1, (1, channels, 1, 1), &Device::Cpu).unwrap();
            tensors.insert(format!("lin{k}.model.1.weight"), lin);
        }
        if let Some(key) = skip {
            tensors.remove(key);
        }
        let path = dir.join("alex.safetensors");
        candle::safetensors::save(&tensors, &path).unwrap();
        path
    }

    #[test]
    fn identical_images_are_at_distance_zero_and_others_are_not() -> candle::Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let config = PerceptualConfig {
            weights: alex_weights(dir.path(), None),
            net: LpipsNet::Alex,
            model: LpipsModel::NetLin,
        };
        let loss = config.build(2).unwrap();
        let a = Tensor::rand(0f32, 1.0, (2, 1, 64, 64), &Device::Cpu)?;
        let b = Tensor::rand(0f32, 1.0, (2, 1, 64, 64), &Device::Cpu)?;
        let same = loss.loss(&a, Some(&a))?.to_vec1::<f32>()?;
        assert_eq!(same, vec![0.0, 0.0]);
        let different = loss.loss(&b, Some(&a))?.to_vec1::<f32>()?;
        assert!(different.iter().all(|&d| d > 0.0), "{different:?}");
        Ok(())
    }

    #[test]
    fn missing_files_and_weights_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let missing = PerceptualConfig {
            weights: dir.path().join("none.safetensors"),
            net: LpipsNet::Vgg,
            model: LpipsModel::NetLin,
        };
        let message = missing.build(2).err().expect("refused").to_string();
        assert!(
            message.contains("none.safetensors") && message.contains("lpips_weights.py"),
            "{message}"
        );
        let partial = PerceptualConfig {
            weights: alex_weights(dir.path(), Some("lin2.model.1.weight")),
            net: LpipsNet::Alex,
            model: LpipsModel::NetLin,
        };
        let message = partial.build(2).err().expect("refused").to_string();
        assert!(message.contains("`lin2.model.1.weight`"), "{message}");
        let vgg = PerceptualConfig {
            weights: alex_weights(dir.path(), None),
            net: LpipsNet::Vgg,
            model: LpipsModel::Net,
        };
        let message = vgg.build(2).err().expect("refused").to_string();
        assert!(message.contains("net.slice1.0.weight"), "{message}");
        assert!(partial.build(3).is_err());
    }
}
