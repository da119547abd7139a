//! The weight updates of the LoRA family, merged into a weight as it is read
//! ([`crate::model::checkpoint::ReadBackend`]): `W += scale · ΔW`, with ΔW from its factors —
//! LoRA / LoCon `up · down`, LyCORIS LoHa `(w1a · w1b) ⊙ (w2a · w2b)` and LoKr `w1 ⊗ w2` —
//! as a matrix of `W`'s first dimension by the rest, reshaped to `W`'s shape (linear layers,
//! 1×1 and k×k convolutions alike).

use candle_core::{Result as CandleResult, Tensor};

/// The factors of one module's update (f32, on the CPU).
#[derive(Debug, Clone)]
pub enum Factors {
    /// LoRA / LoCon: `up (out, rank[, 1, 1]) · down (rank, in[, kh, kw])`.
    LowRank {
        /// `(out, rank)`.
        up: Tensor,
        /// `(rank, in…)`.
        down: Tensor,
    },
    /// LoHa: the elementwise product of two low-rank products.
    Hadamard {
        /// `(out, rank)`.
        w1a: Tensor,
        /// `(rank, in…)`.
        w1b: Tensor,
        /// `(out, rank)`.
        w2a: Tensor,
        /// `(rank, in…)`.
        w2b: Tensor,
    },
    /// LoKr: the Kronecker product of `w1 (a, c)` and `w2 (b, d…)` (each already the product
    /// of its factors where the file factors it): `(a·b, c·d…)`.
    Kronecker {
        /// `(a, c)`.
        w1: Tensor,
        /// `(b, d…)`.
        w2: Tensor,
    },
}

/// One module's update and the scale it is merged with (the user's scale times the
/// module's `alpha / rank`).
#[derive(Debug, Clone)]
pub struct Update {
    /// The factors.
    pub factors: Factors,
    /// The scale.
    pub scale: f64,
}

/// `(rows, rank, columns)` of `a · b` read as matrices, or `None` when the ranks differ.
fn product_shape(a: &Tensor, b: &Tensor) -> Option<(usize, usize, usize)> {
    let rows = *a.dims().first()?;
    let rank = a.elem_count() / rows.max(1);
    let b_rank = *b.dims().first()?;
    (rank == b_rank && rank > 0).then(|| (rows, rank, b.elem_count() / b_rank))
}

fn matmul(
    a: &Tensor,
    b: &Tensor,
    (rows, rank, cols): (usize, usize, usize),
) -> CandleResult<Tensor> {
    a.reshape((rows, rank))?.matmul(&b.reshape((rank, cols))?)
}

impl Update {
    /// The update as an `(out, in…)` matrix's shape, or why its factors do not multiply.
    fn matrix_shape(&self) -> Result<(usize, usize), String> {
        let dims = |t: &Tensor| format!("{:?}", t.dims());
        match &self.factors {
            Factors::LowRank { up, down } => product_shape(up, down)
                .map(|(r, _, c)| (r, c))
                .ok_or_else(|| {
                    format!(
                        "up {} and down {} have different ranks",
                        dims(up),
                        dims(down)
                    )
                }),
            Factors::Hadamard { w1a, w1b, w2a, w2b } => {
                let one = product_shape(w1a, w1b);
                let two = product_shape(w2a, w2b);
                match (one, two) {
                    (Some((r1, _, c1)), Some((r2, _, c2))) if (r1, c1) == (r2, c2) => Ok((r1, c1)),
                    _ => Err(format!(
                        "hada_w1 {} · {} and hada_w2 {} · {} do not make two matrices of one shape",
                        dims(w1a),
                        dims(w1b),
                        dims(w2a),
                        dims(w2b)
                    )),
                }
            }
            Factors::Kronecker { w1, w2 } => match (w1.dims(), w2.dims().first()) {
                ([a, c], Some(&b)) if b > 0 => Ok((a * b, c * (w2.elem_count() / b))),
                _ => Err(format!("lokr_w1 {} is not a matrix", dims(w1))),
            },
        }
    }

    /// Whether the update makes a weight of shape `dims`, else why not.
    pub fn check(&self, dims: &[usize]) -> Result<(), String> {
        let (out, inner) = self.matrix_shape()?;
        let numel: usize = dims.iter().product();
        if dims.first() != Some(&out) || out * inner != numel {
            return Err(format!(
                "its factors make a {out}×{inner} update, not the model's {dims:?} weight"
            ));
        }
        Ok(())
    }

    /// `scale · ΔW` in the shape `dims`, or why it does not fit them.
    pub fn delta(&self, dims: &[usize]) -> Result<Tensor, String> {
        self.check(dims)?;
        let full = || -> CandleResult<Tensor> {
            let m = match &self.factors {
                Factors::LowRank { up, down } => {
                    matmul(up, down, product_shape(up, down).expect("checked"))?
                }
                Factors::Hadamard { w1a, w1b, w2a, w2b } => {
                    let one = matmul(w1a, w1b, product_shape(w1a, w1b).expect("checked"))?;
                    let two = matmul(w2a, w2b, product_shape(w2a, w2b).expect("checked"))?;
                    (one * two)?
                }
                Factors::Kronecker { w1, w2 } => {
                    let (a, c) = w1.dims2()?;
                    let b = w2.dim(0)?;
                    let d = w2.elem_count() / b;
                    let w1 = w1.reshape((a, 1, c, 1))?;
                    let w2 = w2.reshape((1, b, 1, d))?;
                    w1.broadcast_mul(&w2)?.reshape((a * b, c * d))?
                }
            };
            m.affine(self.scale, 0.0)?.reshape(dims)
        };
        full().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(rows: &[&[f32]]) -> Tensor {
        let v: Vec<Vec<f32>> = rows.iter().map(|r| r.to_vec()).collect();
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn values(u: &Update, dims: &[usize]) -> Vec<f32> {
        u.delta(dims)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn each_kind_of_update_computes_its_product() {
        let low = Update {
            factors: Factors::LowRank {
                up: t(&[&[1.], &[2.]]),
                down: t(&[&[3., 4.]]),
            },
            scale: 0.5,
        };
        assert_eq!(values(&low, &[2, 2]), [1.5, 2., 3., 4.]);
        // A 1×1 convolution's weight takes the same update.
        assert_eq!(values(&low, &[2, 2, 1, 1]), [1.5, 2., 3., 4.]);

        let hada = Update {
            factors: Factors::Hadamard {
                w1a: t(&[&[1.], &[2.]]),
                w1b: t(&[&[1., 1.]]),
                w2a: t(&[&[3.], &[1.]]),
                w2b: t(&[&[1., 2.]]),
            },
            scale: 1.0,
        };
        // [[1,1],[2,2]] ⊙ [[3,6],[1,2]]
        assert_eq!(values(&hada, &[2, 2]), [3., 6., 2., 4.]);

        let kron = Update {
            factors: Factors::Kronecker {
                w1: t(&[&[1., 2.]]),
                w2: t(&[&[1.], &[10.]]),
            },
            scale: 2.0,
        };
        // [1 2] ⊗ [1; 10] = [[1 2]; [10 20]]
        assert_eq!(values(&kron, &[2, 2]), [2., 4., 20., 40.]);
    }

    #[test]
    fn factors_that_do_not_fit_are_named() {
        let bad_rank = Update {
            factors: Factors::LowRank {
                up: t(&[&[1., 1.], &[2., 2.]]),
                down: t(&[&[3., 4.]]),
            },
            scale: 1.0,
        };
        assert!(
            bad_rank
                .check(&[2, 2])
                .unwrap_err()
                .contains("different ranks")
        );
        let low = Update {
            factors: Factors::LowRank {
                up: t(&[&[1.], &[2.]]),
                down: t(&[&[3., 4., 5.]]),
            },
            scale: 1.0,
        };
        let e = low.check(&[2, 2]).unwrap_err();
        assert!(
            e.contains("2×3 update, not the model's [2, 2] weight"),
            "{e}"
        );
        assert!(low.check(&[2, 3]).is_ok());
    }
}
