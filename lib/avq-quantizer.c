#include "avq-quantizer.h"
#include <cblas.h>
#include <math.h>
#include <string.h>
#include "avq-error.h"
#include "avq-ops.h"
#include "avq-vision.h"

#define VM "vision_tower.vision_model."

struct _AvqQuantizerScratch {
  float *z;       /* [T, D] */
  float *u;       /* [T, D] */
  float *scores;  /* [T, K] */
  float *mean;    /* [T] */
  float *sigma;   /* [T] */
  double *work;   /* [3 D]: the derive solve */
};

void
avq_quantizer_free (AvqQuantizer *q)
{
  if (q == NULL)
    return;
  g_free (q->codebook);
  g_free (q->codebook_sqnorm);
  g_free (q->in_w);
  g_free (q->in_b);
  g_free (q->out_w);
  g_free (q->out_b);
  g_free (q->ln1_w);
  g_free (q->ln1_b);
  g_free (q->pre_w);
  g_free (q->pre_b);
  g_free (q);
}

/* Metadata values are decimal strings; anything else (sign, spaces, hex,
 * trailing text, overflow) is a malformed file. */
static gboolean
meta_int (const AvqSafetensors *st, const char *key, gint64 min, gint64 max,
          gint64 *value, GError **error)
{
  const char *s = avq_safetensors_metadata (st, key);
  const char *path = avq_safetensors_path (st);
  if (s == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING,
                 "%s: metadata key %s is missing", path, key);
    return FALSE;
  }
  g_autoptr (GError) local = NULL;
  guint64 u;
  if (!g_ascii_string_to_unsigned (s, 10, 0, G_MAXINT32, &u, &local) ||
      (gint64) u < min || (gint64) u > max) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: metadata %s=\"%s\" is not an integer in %" G_GINT64_FORMAT
                 "..%" G_GINT64_FORMAT, path, key, s, min, max);
    return FALSE;
  }
  *value = (gint64) u;
  return TRUE;
}

static const char *
meta_str (const AvqSafetensors *st, const char *key, GError **error)
{
  const char *s = avq_safetensors_metadata (st, key);
  if (s == NULL)
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING,
                 "%s: metadata key %s is missing", avq_safetensors_path (st),
                 key);
  return s;
}

static float *
file_tensor (const AvqSafetensors *st, const char *name, int ndim,
             const gint64 *shape, GError **error)
{
  const AvqTensor *t = avq_safetensors_find (st, name);
  if (t == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING,
                 "%s: tensor %s is missing", avq_safetensors_path (st), name);
    return NULL;
  }
  if (!avq_tensor_check_float (t, ndim, shape, error))
    return NULL;
  float *data = avq_tensor_dup_f32 (t);
  gsize n = avq_tensor_numel (t);
  for (gsize i = 0; i < n; i++)
    if (!isfinite (data[i])) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "%s: tensor %s holds a non-finite value at element %" G_GSIZE_FORMAT,
                   avq_safetensors_path (st), name, i);
      g_free (data);
      return NULL;
    }
  return data;
}

static float *
model_tensor (const AvqModel *model, const char *name, gint64 d,
              gboolean must_invert, GError **error)
{
  const gint64 shape[1] = { d };
  const AvqTensor *t = avq_model_require (model, 1, shape, error, "%s", name);
  if (t == NULL)
    return NULL;
  float *data = avq_tensor_dup_f32 (t);
  /* The cloud divides by these gains to undo the LayerNorm; a zero or
   * non-finite gain would turn every reconstruction into inf/NaN. */
  for (gint64 i = 0; i < d; i++)
    if (!isfinite (data[i]) || (must_invert && data[i] == 0.0f)) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "%s: tensor %s element %" G_GINT64_FORMAT " is %g, which the "
                   "AVQ residual cannot invert", t->file, name, i, data[i]);
      g_free (data);
      return NULL;
    }
  return data;
}

AvqQuantizer *
avq_quantizer_new (const AvqSafetensors *st, const AvqModel *model,
                   GError **error)
{
  g_return_val_if_fail (st != NULL && model != NULL, NULL);
  const char *path = avq_safetensors_path (st);
  const AvqLlavaConfig *cfg = &model->config;
  g_autoptr (AvqQuantizer) q = g_new0 (AvqQuantizer, 1);

  const char *format = meta_str (st, "avq.format", error);
  if (format == NULL)
    return NULL;
  if (strcmp (format, "1") != 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "%s: avq.format \"%s\" is not supported (this reader knows 1)",
                 path, format);
    return NULL;
  }
  const char *site = meta_str (st, "avq.site", error);
  if (site == NULL)
    return NULL;
  if (strcmp (site, "ln1") != 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "%s: avq.site \"%s\" is not supported (only ln1)", path, site);
    return NULL;
  }
  const char *residual = meta_str (st, "avq.residual", error);
  if (residual == NULL)
    return NULL;
  if (strcmp (residual, "derive") == 0)
    q->residual = AVQ_RESIDUAL_DERIVE;
  else if (strcmp (residual, "side") == 0)
    q->residual = AVQ_RESIDUAL_SIDE;
  else {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: avq.residual \"%s\" is neither derive nor side", path,
                 residual);
    return NULL;
  }

  gint64 layer, index_bits, side_bits, codebook_size;
  if (!meta_int (st, "avq.layer", 0, G_MAXINT32, &layer, error) ||
      !meta_int (st, "avq.index_bits", 1, 16, &index_bits, error) ||
      !meta_int (st, "avq.side_bits", 0, 16, &side_bits, error) ||
      !meta_int (st, "avq.codebook_size", 1, 1 << 16, &codebook_size, error))
    return NULL;
  if (codebook_size != (G_GINT64_CONSTANT (1) << index_bits)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: avq.codebook_size %" G_GINT64_FORMAT " is not "
                 "2^avq.index_bits (%" G_GINT64_FORMAT " bits)", path,
                 codebook_size, index_bits);
    return NULL;
  }
  if (q->residual == AVQ_RESIDUAL_SIDE && side_bits == 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: avq.residual side needs avq.side_bits in 1..16", path);
    return NULL;
  }
  if (q->residual == AVQ_RESIDUAL_DERIVE && side_bits != 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: avq.residual derive sends no side information but "
                 "avq.side_bits is %" G_GINT64_FORMAT, path, side_bits);
    return NULL;
  }
  if (q->residual == AVQ_RESIDUAL_DERIVE && layer != 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: avq.residual derive is only defined at layer 0, not %"
                 G_GINT64_FORMAT, path, layer);
    return NULL;
  }
  int layers_run = avq_llava_config_vision_layers_run (cfg);
  if (layer >= layers_run || layer >= cfg->vision.num_layers) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH,
                 "%s: avq.layer %" G_GINT64_FORMAT " is outside 0..%d, the "
                 "layers %s runs", path, layer, MIN (layers_run, cfg->vision.num_layers) - 1,
                 model->dir ? model->dir : "the model");
    return NULL;
  }
  q->layer = (int) layer;
  q->index_bits = (guint) index_bits;
  q->side_bits = (guint) side_bits;
  q->codebook_size = (int) codebook_size;
  q->dim = cfg->vision.hidden_size;
  q->eps = cfg->vision.layer_norm_eps;
  if (cfg->vision.patch_size <= 0 || cfg->vision.image_size < cfg->vision.patch_size ||
      cfg->vision.hidden_size <= 0 || cfg->vision.hidden_size > 65536) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "vision_config: inconsistent sizes (hidden %d, image %d, patch %d)",
                 cfg->vision.hidden_size, cfg->vision.image_size,
                 cfg->vision.patch_size);
    return NULL;
  }
  gint64 grid = cfg->vision.image_size / cfg->vision.patch_size;
  if (grid * grid + 1 > AVQ_VISION_MAX_TOKENS) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "vision_config: %" G_GINT64_FORMAT " tokens exceed a frame",
                 grid * grid + 1);
    return NULL;
  }
  q->tokens = (int) (grid * grid + 1);

  /* The codebook's declared shape is checked against the metadata and the
   * model separately, so a mismatch names its actual cause. */
  const AvqTensor *cb = avq_safetensors_find (st, "avq.codebook");
  if (cb == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING,
                 "%s: tensor avq.codebook is missing", path);
    return NULL;
  }
  if (cb->ndim == 2 && cb->shape[0] == codebook_size && cb->shape[1] != q->dim) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH,
                 "%s: avq.codebook has dimension %" G_GINT64_FORMAT " but the "
                 "vision tower's hidden size is %d", path, cb->shape[1], q->dim);
    return NULL;
  }
  const gint64 D = q->dim;
  const gint64 kd[2] = { codebook_size, D }, dd[2] = { D, D }, vd[1] = { D },
               one[1] = { 1 };
  float *in_gamma = NULL, *out_gamma = NULL;
  if (!(q->codebook = file_tensor (st, "avq.codebook", 2, kd, error)) ||
      !(q->in_w = file_tensor (st, "avq.dlp_in.weight", 2, dd, error)) ||
      !(q->in_b = file_tensor (st, "avq.dlp_in.bias", 1, vd, error)) ||
      !(in_gamma = file_tensor (st, "avq.dlp_in.gamma", 1, one, error)) ||
      !(q->out_w = file_tensor (st, "avq.dlp_out.weight", 2, dd, error)) ||
      !(q->out_b = file_tensor (st, "avq.dlp_out.bias", 1, vd, error)) ||
      !(out_gamma = file_tensor (st, "avq.dlp_out.gamma", 1, one, error))) {
    g_free (in_gamma);
    return NULL;
  }
  q->in_scale = tanhf (in_gamma[0]);
  q->out_scale = tanhf (out_gamma[0]);
  g_free (in_gamma);
  g_free (out_gamma);

  /* The id covers the bytes as stored (dtype included), so two files with
   * the same values in different precisions are different codebooks. */
  GChecksum *sum = g_checksum_new (G_CHECKSUM_SHA256);
  g_checksum_update (sum, cb->data, cb->nbytes);
  guint8 digest[32];
  gsize dlen = sizeof digest;
  g_checksum_get_digest (sum, digest, &dlen);
  g_checksum_free (sum);
  memcpy (q->codebook_id, digest, AVQ_CODEBOOK_ID_SIZE);

  q->codebook_sqnorm = g_new (float, codebook_size);
  for (gint64 k = 0; k < codebook_size; k++) {
    const float *e = q->codebook + k * D;
    double s = 0;
    for (gint64 c = 0; c < D; c++)
      s += (double) e[c] * e[c];
    q->codebook_sqnorm[k] = (float) s;
  }

  char name[160];
  gboolean invert = TRUE;
  g_snprintf (name, sizeof name, VM "encoder.layers.%d.layer_norm1.weight", q->layer);
  if (!(q->ln1_w = model_tensor (model, name, D, invert, error)))
    return NULL;
  g_snprintf (name, sizeof name, VM "encoder.layers.%d.layer_norm1.bias", q->layer);
  if (!(q->ln1_b = model_tensor (model, name, D, FALSE, error)))
    return NULL;
  if (q->residual == AVQ_RESIDUAL_DERIVE) {
    if (!(q->pre_w = model_tensor (model, VM "pre_layrnorm.weight", D, TRUE, error)) ||
        !(q->pre_b = model_tensor (model, VM "pre_layrnorm.bias", D, FALSE, error)))
      return NULL;
  }
  return g_steal_pointer (&q);
}

AvqQuantizer *
avq_quantizer_load (const char *path, const AvqModel *model, GError **error)
{
  g_autoptr (AvqSafetensors) st = avq_safetensors_open (path, error);
  if (st == NULL)
    return NULL;
  return avq_quantizer_new (st, model, error);
}

AvqQuantizerScratch *
avq_quantizer_scratch_new (const AvqQuantizer *q)
{
  AvqQuantizerScratch *s = g_new0 (AvqQuantizerScratch, 1);
  gsize T = q->tokens, D = q->dim;
  s->z = g_new (float, T * D);
  s->u = g_new (float, T * D);
  s->scores = g_new (float, T * (gsize) q->codebook_size);
  s->mean = g_new (float, T);
  s->sigma = g_new (float, T);
  s->work = g_new (double, 3 * D);
  return s;
}

void
avq_quantizer_scratch_free (AvqQuantizerScratch *s)
{
  if (s == NULL)
    return;
  g_free (s->z);
  g_free (s->u);
  g_free (s->scores);
  g_free (s->mean);
  g_free (s->sigma);
  g_free (s->work);
  g_free (s);
}

/* u = z + scale * (z W^T + b), written to `out` (which must not alias z). */
static void
dlp (const float *z, int n, int d, const float *w, const float *b, float scale,
     float *out)
{
  avq_linear (z, n, d, w, b, d, out);
  gsize total = (gsize) n * d;
  for (gsize i = 0; i < total; i++)
    out[i] = z[i] + scale * out[i];
}

static float
side_step (float lo, float hi, guint bits)
{
  return hi == lo ? 1.0f : (hi - lo) / (float) ((1u << bits) - 1);
}

static guint16
side_quantize (float v, float lo, float step, guint bits)
{
  float r = rintf ((v - lo) / step);
  float top = (float) ((1u << bits) - 1);
  r = r < 0.0f ? 0.0f : (r > top ? top : r);
  return (guint16) r;
}

AvqFrame *
avq_quantizer_encode (const AvqQuantizer *q, const float *x,
                      AvqQuantizerScratch *s, float *margins)
{
  const int T = q->tokens, D = q->dim, K = q->codebook_size;
  AvqFrame *frame = avq_frame_new (T, q->index_bits, q->side_bits,
                                   q->codebook_id);

  avq_layernorm (x, T, D, q->ln1_w, q->ln1_b, q->eps, s->z, s->mean, s->sigma);
  dlp (s->z, T, D, q->in_w, q->in_b, q->in_scale, s->u);

  /* ||u - e||^2 = ||u||^2 + ||e||^2 - 2 u.e; ||u||^2 is the same for every
   * k, so the row argmin of ||e||^2 - 2 u.e picks the nearest codeword with
   * all the work in one [T, D] x [D, K] GEMM. */
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, T, K, D, 1.0f, s->u, D,
               q->codebook, D, 0.0f, s->scores, K);
  for (int t = 0; t < T; t++) {
    const float *row = s->scores + (gsize) t * K;
    float best = INFINITY, second = INFINITY;
    int bi = 0;
    for (int k = 0; k < K; k++) {
      float dist = q->codebook_sqnorm[k] - 2.0f * row[k];
      if (dist < best) {
        second = best;
        best = dist;
        bi = k;
      } else if (dist < second) {
        second = dist;
      }
    }
    frame->indices[t] = (guint16) bi;
    if (margins)
      margins[t] = second - best;
  }

  if (q->residual == AVQ_RESIDUAL_SIDE) {
    /* log(sigma) rather than sigma: the scale spans orders of magnitude
     * across tokens and a uniform grid in the log domain keeps the relative
     * error even. */
    float mlo = INFINITY, mhi = -INFINITY, llo = INFINITY, lhi = -INFINITY;
    for (int t = 0; t < T; t++) {
      s->sigma[t] = logf (s->sigma[t]);
      mlo = MIN (mlo, s->mean[t]);
      mhi = MAX (mhi, s->mean[t]);
      llo = MIN (llo, s->sigma[t]);
      lhi = MAX (lhi, s->sigma[t]);
    }
    frame->side_range[0] = mlo;
    frame->side_range[1] = mhi;
    frame->side_range[2] = llo;
    frame->side_range[3] = lhi;
    float ms = side_step (mlo, mhi, q->side_bits);
    float ls = side_step (llo, lhi, q->side_bits);
    for (int t = 0; t < T; t++) {
      frame->side_codes[2 * t] = side_quantize (s->mean[t], mlo, ms, q->side_bits);
      frame->side_codes[2 * t + 1] = side_quantize (s->sigma[t], llo, ls, q->side_bits);
    }
  }
  return frame;
}

gboolean
avq_quantizer_check_frame (const AvqQuantizer *q, const AvqFrame *f,
                           GError **error)
{
  if (f->version != AVQ_FRAME_VERSION ||
      (f->flags & ~AVQ_FRAME_KNOWN_FLAGS) != 0 ||
      !(f->flags & AVQ_FRAME_FLAG_KEYFRAME)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "AVQ frame version %u flags 0x%02x: not a v1 keyframe",
                 f->version, f->flags);
    return FALSE;
  }
  if (memcmp (f->codebook_id, q->codebook_id, AVQ_CODEBOOK_ID_SIZE) != 0) {
    char want[17], got[17];
    avq_codebook_id_to_hex (q->codebook_id, want);
    avq_codebook_id_to_hex (f->codebook_id, got);
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH,
                 "AVQ frame uses codebook %s, the AVQ file has %s", got, want);
    return FALSE;
  }
  if (f->tokens != q->tokens || f->index_bits != q->index_bits ||
      f->side_bits != q->side_bits) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH,
                 "AVQ frame has %u tokens, %u index bits, %u side bits; the "
                 "AVQ file expects %d, %u, %u", f->tokens, f->index_bits,
                 f->side_bits, q->tokens, q->index_bits, q->side_bits);
    return FALSE;
  }
  gboolean has_side = (f->flags & AVQ_FRAME_FLAG_SIDE_INFO) != 0;
  if (f->indices == NULL || has_side != (q->side_bits > 0) ||
      (q->side_bits > 0 && f->side_codes == NULL)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "AVQ frame: indices or side information missing");
    return FALSE;
  }
  for (int t = 0; t < q->tokens; t++)
    if (f->indices[t] >= q->codebook_size) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "AVQ frame: index %u of token %d is outside the codebook (%d)",
                   f->indices[t], t, q->codebook_size);
      return FALSE;
    }
  if (q->side_bits > 0) {
    guint top = (1u << q->side_bits) - 1;
    for (int i = 0; i < 2 * q->tokens; i++)
      if (f->side_codes[i] > top) {
        g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                     "AVQ frame: side code %u exceeds %u bits", f->side_codes[i],
                     q->side_bits);
        return FALSE;
      }
    for (int i = 0; i < 4; i++)
      if (!isfinite (f->side_range[i])) {
        g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                     "AVQ frame: side range is not finite");
        return FALSE;
      }
    if (f->side_range[0] > f->side_range[1] || f->side_range[2] > f->side_range[3] ||
        f->side_range[3] > 80.0f) {
      /* exp(80) is near float's limit: a larger log-scale is forged. */
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "AVQ frame: side ranges run backwards or overflow");
      return FALSE;
    }
  }
  return TRUE;
}

/* x^_0 from zhat alone (AVQ-SPEC 5, "derive"): x_0 = gamma_p * n + beta_p with
 * n of zero mean and unit mean square, and x_0 = m + s u per token, give two
 * equations for the token's mean m and scale s. Done in double: the
 * quadratic's discriminant cancels. */
static void
derive_residual (const AvqQuantizer *q, const float *zhat, float *x,
                 double *work)
{
  const int T = q->tokens, D = q->dim;
  double B = 0, C = 0, R = 0;
  double *u = work, *p = work + D, *qq = work + 2 * D;
  for (int c = 0; c < D; c++) {
    B += 1.0 / q->pre_w[c];
    C += (double) q->pre_b[c] / q->pre_w[c];
  }
  B /= D;
  C /= D;
  for (int c = 0; c < D; c++) {
    double b = 1.0 / q->pre_w[c], cc = (double) q->pre_b[c] / q->pre_w[c];
    qq[c] = (C / B) * b - cc;
    R += qq[c] * qq[c];
  }
  R = R / D - 1.0;
  for (int t = 0; t < T; t++) {
    const float *zr = zhat + (gsize) t * D;
    float *xr = x + (gsize) t * D;
    double A = 0;
    for (int c = 0; c < D; c++) {
      u[c] = ((double) zr[c] - q->ln1_b[c]) / q->ln1_w[c];
      A += u[c] / q->pre_w[c];
    }
    A /= D;
    double P = 0, Q = 0;
    for (int c = 0; c < D; c++) {
      p[c] = u[c] / q->pre_w[c] - A / B / q->pre_w[c];
      P += p[c] * p[c];
      Q += p[c] * qq[c];
    }
    P /= D;
    Q /= D;
    /* P = 0 only if zhat is a constant row; the token then carries no
     * shape and its best reconstruction is the mean alone. */
    double sc = P > 0 ? (-Q + sqrt (MAX (Q * Q - P * R, 0.0))) / P : 0.0;
    double m = (C - sc * A) / B;
    for (int c = 0; c < D; c++)
      xr[c] = (float) (m + sc * u[c]);
  }
}

gboolean
avq_quantizer_decode (const AvqQuantizer *q, const AvqFrame *f, float *zhat,
                      float *x_hat, AvqQuantizerScratch *s, GError **error)
{
  if (!avq_quantizer_check_frame (q, f, error))
    return FALSE;
  const int T = q->tokens, D = q->dim;
  for (int t = 0; t < T; t++)
    memcpy (s->z + (gsize) t * D, q->codebook + (gsize) f->indices[t] * D,
            sizeof (float) * D);
  dlp (s->z, T, D, q->out_w, q->out_b, q->out_scale, zhat);

  if (q->residual == AVQ_RESIDUAL_DERIVE) {
    derive_residual (q, zhat, x_hat, s->work);
    return TRUE;
  }
  const float *r = f->side_range;
  float ms = side_step (r[0], r[1], q->side_bits);
  float ls = side_step (r[2], r[3], q->side_bits);
  for (int t = 0; t < T; t++) {
    float mu = r[0] + (float) f->side_codes[2 * t] * ms;
    float sigma = expf (r[2] + (float) f->side_codes[2 * t + 1] * ls);
    const float *zr = zhat + (gsize) t * D;
    float *xr = x_hat + (gsize) t * D;
    for (int c = 0; c < D; c++)
      xr[c] = mu + sigma * (zr[c] - q->ln1_b[c]) / q->ln1_w[c];
  }
  return TRUE;
}
