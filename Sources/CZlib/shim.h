// zlib, for reading gzip-compressed access logs (corridor learn).
#include <zlib.h>
