/**
 * Every count, length and size read from an input file is checked against one of these limits
 * before it is used to allocate or loop. Each carries the reason for its value.
 */

/** Largest chunk the library holds in memory while copying tensor bytes (peak memory ~ a few chunks). */
export const CHUNK_BYTES = 16 * 1024 * 1024;

/** safetensors: the reference implementation refuses headers above 100 MB (MAX_HEADER_SIZE). */
export const MAX_SAFETENSORS_HEADER_BYTES = 100_000_000;

/** Tensors per file: SDXL checkpoints hold ~2,500; 10^6 leaves room and bounds the tables. */
export const MAX_TENSORS = 1_000_000;

/** Tensor rank: SD tensors have rank <= 4; 8 matches the recommendation for safe loaders. */
export const MAX_RANK = 8;

/** data.pkl / legacy object pickle size: real SD pickles are < 2 MB; 64 MiB is generous. */
export const MAX_PICKLE_BYTES = 64 * 1024 * 1024;

/** Pickle memo entries: bounds memo-bomb inputs. */
export const MAX_PICKLE_MEMO = 10_000_000;

/** Nesting depth of pickled containers walked after unpickling (stack-overflow guard). */
export const MAX_PICKLE_DEPTH = 1000;

/** One pickled string or bytes object. */
export const MAX_PICKLE_STRING_BYTES = 16 * 1024 * 1024;

/** Zip central-directory entries: an SD .ckpt has ~1,200 records; 10^6 bounds hostile files. */
export const MAX_ZIP_ENTRIES = 1_000_000;

/** The end-of-central-directory record lies within the last 22 + 65,535 bytes (comment max). */
export const MAX_EOCD_SEARCH_BYTES = 22 + 0xffff;

/** Small zip records (version, byteorder, ...) are read whole; anything larger is suspicious. */
export const MAX_SMALL_RECORD_BYTES = 4096;

/** Inflated output of one deflated entry we hold in memory (data.pkl); bounds deflate bombs. */
export const MAX_INFLATED_BYTES = MAX_PICKLE_BYTES;

/** Non-contiguous tensors are materialised from their storage span in memory; cap that span. */
export const MAX_STRIDED_SPAN_BYTES = 1024 * 1024 * 1024;

/** Mapping/config JSON and original-config YAML files we read whole. */
export const MAX_CONFIG_FILE_BYTES = 16 * 1024 * 1024;
