/* The C side of gallery-libtiff: what is easier and safer written against libtiff's own header
 * than declared again in Rust. Opening from memory (libtiff's client I/O callbacks), error
 * messages (libtiff hands them over as a va_list, which stable Rust can't take), and the RGBA
 * interface's state (a struct whose layout belongs to the header). Nothing here allocates
 * image memory: the caller passes the raster. */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <tiffio.h>

/* The bytes of one file, read in place. */
typedef struct {
    const unsigned char *data;
    uint64_t len;
    uint64_t pos;
} gallery_tiff_source;

/* The first error libtiff reported for one handle. */
typedef struct {
    char text[1024];
} gallery_tiff_message;

static tmsize_t source_read(thandle_t handle, void *buf, tmsize_t size) {
    gallery_tiff_source *src = (gallery_tiff_source *)handle;
    if (size < 0) return -1;
    uint64_t left = src->pos < src->len ? src->len - src->pos : 0;
    uint64_t n = (uint64_t)size < left ? (uint64_t)size : left;
    if (n > 0) memcpy(buf, src->data + src->pos, (size_t)n);
    src->pos += n;
    return (tmsize_t)n;
}

static tmsize_t source_write(thandle_t handle, void *buf, tmsize_t size) {
    (void)handle; (void)buf; (void)size;
    return -1; /* opened read-only */
}

static toff_t source_seek(thandle_t handle, toff_t offset, int whence) {
    gallery_tiff_source *src = (gallery_tiff_source *)handle;
    uint64_t base;
    switch (whence) {
        case SEEK_SET: base = 0; break;
        case SEEK_CUR: base = src->pos; break;
        case SEEK_END: base = src->len; break;
        default: return (toff_t)-1;
    }
    if (offset > UINT64_MAX - base) return (toff_t)-1;
    src->pos = base + offset; /* past the end is allowed; reads there return 0 bytes */
    return (toff_t)src->pos;
}

static int source_close(thandle_t handle) {
    (void)handle;
    return 0;
}

static toff_t source_size(thandle_t handle) {
    return (toff_t)((gallery_tiff_source *)handle)->len;
}

static int source_map(thandle_t handle, void **base, toff_t *size) {
    (void)handle; (void)base; (void)size;
    return 0; /* no mapping: every read goes through source_read's bounds */
}

static void source_unmap(thandle_t handle, void *base, toff_t size) {
    (void)handle; (void)base; (void)size;
}

static int keep_first_error(TIFF *tif, void *user, const char *module, const char *fmt,
                            va_list ap) {
    (void)tif; (void)module;
    gallery_tiff_message *message = (gallery_tiff_message *)user;
    if (message != NULL && message->text[0] == '\0') {
        vsnprintf(message->text, sizeof message->text, fmt, ap);
    }
    return 1; /* handled: the global handler (stderr) is not called */
}

static int ignore_warning(TIFF *tif, void *user, const char *module, const char *fmt,
                          va_list ap) {
    (void)tif; (void)user; (void)module; (void)fmt; (void)ap;
    return 1;
}

static pthread_once_t quiet_once = PTHREAD_ONCE_INIT;

static void quiet_global_handlers(void) {
    /* Errors raised before a handle exists go to the global handlers; they print to stderr. */
    TIFFSetErrorHandler(NULL);
    TIFFSetWarningHandler(NULL);
}

/* Opens `source` for reading; NULL on failure, with the reason in `message`. `source` and
 * `message` must outlive the handle (libtiff keeps both pointers). */
TIFF *gallery_tiff_open(gallery_tiff_source *source, tmsize_t max_single_alloc,
                        gallery_tiff_message *message) {
    pthread_once(&quiet_once, quiet_global_handlers);
    TIFFOpenOptions *options = TIFFOpenOptionsAlloc();
    if (options == NULL) return NULL;
    TIFFOpenOptionsSetMaxSingleMemAlloc(options, max_single_alloc);
    TIFFOpenOptionsSetErrorHandlerExtR(options, keep_first_error, message);
    TIFFOpenOptionsSetWarningHandlerExtR(options, ignore_warning, NULL);
    /* "r": read-only; "m": never map the file. */
    TIFF *tif = TIFFClientOpenExt("upload", "rm", (thandle_t)source, source_read, source_write,
                                  source_seek, source_close, source_size, source_map,
                                  source_unmap, options);
    TIFFOpenOptionsFree(options);
    return tif;
}

/* The first directory's size and Orientation tag (1 when absent). */
int gallery_tiff_header(TIFF *tif, uint32_t *width, uint32_t *height, uint16_t *orientation) {
    uint16_t o = ORIENTATION_TOPLEFT;
    if (!TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, width)) return 0;
    if (!TIFFGetField(tif, TIFFTAG_IMAGELENGTH, height)) return 0;
    if (!TIFFGetField(tif, TIFFTAG_ORIENTATION, &o)) o = ORIENTATION_TOPLEFT;
    *orientation = o;
    return 1;
}

/* The embedded ICC profile, if any: `*data` points into libtiff's copy (valid until close). */
int gallery_tiff_icc(TIFF *tif, uint32_t *len, const void **data) {
    return TIFFGetField(tif, TIFFTAG_ICCPROFILE, len, data);
}

/* Whether the RGBA interface can read this directory; the reason in `message` when not. A
 * compression scheme this libtiff wasn't built with (JPEG 2000...) is refused here: the RGBA
 * interface would accept the directory and fail on the first strip, as if it were damaged. */
int gallery_tiff_rgba_ok(TIFF *tif, gallery_tiff_message *message) {
    char reason[1024] = {0};
    uint16_t compression = COMPRESSION_NONE;
    TIFFGetFieldDefaulted(tif, TIFFTAG_COMPRESSION, &compression);
    if (!TIFFIsCODECConfigured(compression)) {
        snprintf(message->text, sizeof message->text,
                 "compression scheme %u is not supported by this libtiff", compression);
        return 0;
    }
    if (TIFFRGBAImageOK(tif, reason)) return 1;
    snprintf(message->text, sizeof message->text, "%s", reason);
    return 0;
}

/* Reads the directory into `raster` (width x height packed ABGR words, TIFFGetR and
 * friends), rows top to bottom in the order they are stored: the caller applies the
 * Orientation tag (libtiff's own handling flips but never transposes). Alpha comes out
 * premultiplied, except where libtiff copies it as stored: contiguous 8-bit grey with
 * unassociated alpha (its `putagreytile`); `*premultiplied` says which. Stops at the first
 * damaged strip or tile. 1: read; -1: the layout has no RGBA conversion (16-bit CMYK...);
 * 0: the data is damaged. */
int gallery_tiff_read_rgba(TIFF *tif, uint32_t width, uint32_t height, uint32_t *raster,
                           int *premultiplied, gallery_tiff_message *message) {
    char reason[1024] = {0};
    TIFFRGBAImage img;
    if (!TIFFRGBAImageBegin(&img, tif, 1, reason)) {
        snprintf(message->text, sizeof message->text, "%s", reason);
        return -1;
    }
    img.req_orientation = img.orientation;
    int grey = img.photometric == PHOTOMETRIC_MINISBLACK || img.photometric == PHOTOMETRIC_MINISWHITE;
    *premultiplied = !(img.isContig && grey && img.bitspersample == 8 && img.samplesperpixel == 2 &&
                       img.alpha == EXTRASAMPLE_UNASSALPHA);
    int ok = TIFFRGBAImageGet(&img, raster, width, height);
    TIFFRGBAImageEnd(&img);
    return ok;
}
