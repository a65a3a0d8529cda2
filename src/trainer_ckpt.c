/* trainer_ckpt: when the training loop writes checkpoints and how it
 * resumes from one. The HDF5 layout itself lives in ckpt.c. */
#include "arsenal/error.h"
#include "trainer.h"

int ars_trainer_resume(ars_trainer *t)
{
    if (!t->options->resume_path) return 0;
    return ars_error(ARS_EINVAL, "--resume: checkpoints are not implemented yet");
}

int ars_trainer_checkpoint(ars_trainer *t)
{
    return 0;
}

int ars_trainer_epoch_end(ars_trainer *t) { return ars_trainer_checkpoint(t); }

int ars_trainer_finish(ars_trainer *t) { return 0; }
