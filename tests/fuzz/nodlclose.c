/* nodlclose: an LD_PRELOAD shim for the sanitizer suite (scripts/sanitize.sh)
 * that turns dlclose() into a no-op. Open MPI unloads its plugins in
 * MPI_Finalize, before LeakSanitizer reports at exit, so the leaks it never
 * frees would show as "<unknown module>" and no suppression could name them;
 * with the plugins kept mapped they keep their library names (lsan.supp). */
int dlclose(void *handle);

int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
