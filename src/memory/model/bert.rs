//! The BERT encoder of all-MiniLM-L6-v2, written for short texts on a CPU.
//!
//! It computes what `candle_transformers::models::bert` computes (the reference test holds both
//! to the same vectors), with the weights laid out once, at load, the way the matrix product
//! wants them:
//!
//! - every linear layer's weight is stored transposed and contiguous (`[in, out]`). candle's
//!   `Linear` multiplies by `weight.t()`, a strided view, and `gemm` then repacks the whole
//!   weight matrix on every call: for a 7-token query that repacking cost more than the
//!   arithmetic (a third of the forward pass in the profile);
//! - query, key and value are one `[384, 1152]` product instead of three, with the attention
//!   scale 1/√d folded into the query's weights and bias;
//! - the batch is flattened to `[texts × tokens, 384]` rows, so each linear layer is one 2-D
//!   product;
//! - one text alone has no padding, so its attention takes no mask at all.

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

type Result<T> = candle_core::Result<T>;

/// One layer norm's scale and shift.
struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl Norm {
    fn load(vb: &VarBuilder, dims: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dims, "weight")?,
            bias: vb.get(dims, "bias")?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// `x · w + b` with `w` stored `[in, out]`.
struct Dense {
    w: Tensor,
    b: Tensor,
}

impl Dense {
    /// Loads a PyTorch `Linear` (`weight` `[out, in]`) and transposes it once.
    fn load(vb: &VarBuilder, inp: usize, out: usize) -> Result<Self> {
        Self::from_parts(vb.get((out, inp), "weight")?, vb.get(out, "bias")?)
    }

    fn from_parts(w_out_in: Tensor, b: Tensor) -> Result<Self> {
        Ok(Self {
            w: w_out_in.t()?.contiguous()?,
            b,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.w)?.broadcast_add(&self.b)
    }
}

struct Layer {
    qkv: Dense,
    out: Dense,
    attn_norm: Norm,
    up: Dense,
    down: Dense,
    out_norm: Norm,
}

/// The encoder: embeddings, then the layers; `forward` gives the last hidden states.
pub struct Encoder {
    words: Tensor,
    positions: Tensor,
    /// The embedding of token type 0 (sentence embeddings use no other).
    type0: Tensor,
    emb_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
}

impl Encoder {
    /// The weights of `vb` (with or without the `bert.` prefix), rearranged as described above.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        if cfg.hidden_act != HiddenAct::Gelu {
            candle_core::bail!("only the erf GELU of BERT is supported");
        }
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp("bert")
        };
        let h = cfg.hidden_size;
        let heads = cfg.num_attention_heads;
        let head_dim = h / heads;
        let e = vb.pp("embeddings");
        let words = e.get((cfg.vocab_size, h), "word_embeddings.weight")?;
        let positions = e.get(
            (cfg.max_position_embeddings, h),
            "position_embeddings.weight",
        )?;
        let type0 = e
            .get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?
            .get(0)?;
        let emb_norm = Norm::load(&e.pp("LayerNorm"), h, cfg.layer_norm_eps)?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let s = l.pp("attention.self");
            let part = |name: &str, scale: f64| -> Result<(Tensor, Tensor)> {
                let p = s.pp(name);
                Ok((
                    p.get((h, h), "weight")?.affine(scale, 0.0)?,
                    p.get(h, "bias")?.affine(scale, 0.0)?,
                ))
            };
            let (qw, qb) = part("query", scale)?;
            let (kw, kb) = part("key", 1.0)?;
            let (vw, vb_) = part("value", 1.0)?;
            let qkv = Dense::from_parts(
                Tensor::cat(&[qw, kw, vw], 0)?,
                Tensor::cat(&[qb, kb, vb_], 0)?,
            )?;
            layers.push(Layer {
                qkv,
                out: Dense::load(&l.pp("attention.output.dense"), h, h)?,
                attn_norm: Norm::load(&l.pp("attention.output.LayerNorm"), h, cfg.layer_norm_eps)?,
                up: Dense::load(&l.pp("intermediate.dense"), h, cfg.intermediate_size)?,
                down: Dense::load(&l.pp("output.dense"), cfg.intermediate_size, h)?,
                out_norm: Norm::load(&l.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
            });
        }
        Ok(Self {
            words,
            positions,
            type0,
            emb_norm,
            layers,
            heads,
            head_dim,
            hidden: h,
        })
    }

    /// Last hidden states `[texts × tokens, hidden]` of `ids` (`texts` rows of `tokens` ids,
    /// row-major); `mask` (same shape, 1 for a token, 0 for padding) is needed only when some
    /// text is padded.
    pub fn forward(
        &self,
        ids: &[u32],
        texts: usize,
        tokens: usize,
        mask: Option<&[u32]>,
    ) -> Result<Tensor> {
        let dev = &Device::Cpu;
        let ids_t = Tensor::from_slice(ids, texts * tokens, dev)?;
        let pos = self.positions.narrow(0, 0, tokens)?;
        let pos = pos.broadcast_add(&self.type0)?;
        let x = self
            .words
            .embedding(&ids_t)?
            .reshape((texts, tokens, self.hidden))?
            .broadcast_add(&pos)?
            .reshape((texts * tokens, self.hidden))?;
        let mut x = self.emb_norm.forward(&x)?;
        // 0 where a key may be attended to, a large negative number where it is padding.
        let bias = match mask {
            Some(m) => {
                let m: Vec<f32> = m
                    .iter()
                    .map(|&v| if v == 0 { f32::MIN / 2.0 } else { 0.0 })
                    .collect();
                Some(Tensor::from_vec(m, (texts, 1, 1, tokens), dev)?)
            }
            None => None,
        };
        for l in &self.layers {
            x = self.layer(l, &x, texts, tokens, bias.as_ref())?;
        }
        Ok(x)
    }

    fn layer(
        &self,
        l: &Layer,
        x: &Tensor,
        texts: usize,
        tokens: usize,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (h, heads, d) = (self.hidden, self.heads, self.head_dim);
        let qkv = l.qkv.forward(x)?;
        // [texts, tokens, 3, heads, d] → [3, texts, heads, tokens, d]: q, k and v each
        // contiguous.
        let qkv = qkv
            .reshape((texts, tokens, 3, heads, d))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(b) = bias {
            scores = scores.broadcast_add(b)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((texts * tokens, h))?;
        let a = l.attn_norm.forward(&(l.out.forward(&ctx)? + x)?)?;
        let up = l.up.forward(&a)?.gelu_erf()?;
        l.out_norm.forward(&(l.down.forward(&up)? + a)?)
    }
}

/// Mean of each text's hidden states over its tokens (`mask`: 1 kept, 0 padding; `None`: all
/// kept), L2-normalised: one vector per text.
pub fn pool(
    hidden: &Tensor,
    texts: usize,
    tokens: usize,
    mask: Option<&[u32]>,
) -> Result<Vec<Vec<f32>>> {
    let dims = hidden.dim(D::Minus1)?;
    let all = hidden
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(texts);
    for t in 0..texts {
        let mut sum = vec![0f64; dims];
        let mut n = 0usize;
        for i in 0..tokens {
            if mask.is_some_and(|m| m[t * tokens + i] == 0) {
                continue;
            }
            n += 1;
            let row = &all[(t * tokens + i) * dims..][..dims];
            for (s, x) in sum.iter_mut().zip(row) {
                *s += f64::from(*x);
            }
        }
        let n = n.max(1) as f64;
        let norm = sum.iter().map(|s| (s / n) * (s / n)).sum::<f64>().sqrt();
        let norm = norm.max(1e-12);
        out.push(sum.iter().map(|s| (s / n / norm) as f32).collect());
    }
    Ok(out)
}
