"""`make stack`: the Procfile's processes, run by honcho, given the time to stop cleanly.

At Ctrl-C honcho sends each process one SIGTERM, and kills whatever is still running 5 seconds
later. The gateway takes up to 30 s to close its connections, and the workers finish the jobs in
hand first (run_workers kills what outlives the job time limit itself): killed at 5 s, a job would
still finish in its worker group, but the supervisor's account of it would be lost. So honcho waits
as long as Kubernetes gives a worker pod (terminationGracePeriodSeconds in deploy/k8s/worker.yaml).
"""

import sys

import honcho.manager
from honcho.command import main

STOP_GRACE_SECONDS = 150
STOPPED_BY_SIGNAL = (130, 143)  # honcho's exit status after Ctrl-C (SIGINT) or SIGTERM

if __name__ == "__main__":
    honcho.manager.KILL_WAIT = STOP_GRACE_SECONDS  # read by each pass of honcho's loop
    try:
        main(["start", *sys.argv[1:]])
    except SystemExit as stop:  # a stop asked for is no failure; a process that died is
        sys.exit(0 if stop.code in STOPPED_BY_SIGNAL else stop.code)
