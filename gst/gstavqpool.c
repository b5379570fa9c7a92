/* The process-wide registry of named answer pools (gstavqpool.h). */
#include "gstavqpool.h"
#include "avq-error.h"

typedef struct {
  AvqAnswerPool *pool;
  guint users;
} Entry;

static GMutex registry_lock;
static GHashTable *registry;   /* name -> Entry*, under registry_lock */

static void
entry_free (Entry *entry)
{
  avq_answer_pool_unref (entry->pool);
  g_free (entry);
}

AvqAnswerPool *
gst_avq_pool_acquire (const char *name, const AvqAnswererOptions *options,
                      guint max_batch, GError **error)
{
  if (name == NULL || *name == '\0')
    return avq_answer_pool_new (options, 1, error);
  g_mutex_lock (&registry_lock);
  if (registry == NULL)
    registry = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                      (GDestroyNotify) entry_free);
  Entry *entry = g_hash_table_lookup (registry, name);
  AvqAnswerPool *pool = NULL;
  if (entry != NULL) {
    g_autofree char *want = g_strdup_printf ("%s|%s|%s", options->model_dir,
                                             options->avq_path ? options->avq_path : "",
                                             avq_device_to_string (options->device));
    if (g_strcmp0 (want, avq_answer_pool_key (entry->pool)) != 0) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH,
                   "answer pool '%s' serves model|avq|device %s, not %s", name,
                   avq_answer_pool_key (entry->pool), want);
    } else {
      entry->users++;
      pool = avq_answer_pool_ref (entry->pool);
    }
  } else {
    /* Loading under the lock: a second element naming this pool waits for
     * the model it would share anyway. */
    pool = avq_answer_pool_new (options, max_batch, error);
    if (pool != NULL) {
      entry = g_new0 (Entry, 1);
      entry->pool = avq_answer_pool_ref (pool);
      entry->users = 1;
      g_hash_table_insert (registry, g_strdup (name), entry);
    }
  }
  g_mutex_unlock (&registry_lock);
  return pool;
}

void
gst_avq_pool_release (const char *name, AvqAnswerPool *pool)
{
  if (pool == NULL)
    return;
  if (name != NULL && *name != '\0') {
    g_mutex_lock (&registry_lock);
    Entry *entry = registry ? g_hash_table_lookup (registry, name) : NULL;
    if (entry != NULL && entry->pool == pool && --entry->users == 0)
      g_hash_table_remove (registry, name);
    g_mutex_unlock (&registry_lock);
  }
  avq_answer_pool_unref (pool);
}
