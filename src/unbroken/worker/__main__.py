from unbroken.worker.main import main

main()
