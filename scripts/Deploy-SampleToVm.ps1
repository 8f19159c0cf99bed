<#
.SYNOPSIS
    Deploys one sample extension package to a test-signed Hyper-V VM, runs it, collects its
    ETW log, and removes it again. Called by `cargo xtask test-sample --vm NAME` on Windows.

.DESCRIPTION
    Requirements: a Windows host with Hyper-V and its PowerShell module; a Windows VM with
    test signing on (bcdedit /set TESTSIGNING ON, Secure Boot off), the eBPF for Windows
    runtime installed, the Guest Service Interface enabled, and PowerShell Direct available.
    Untested in this project's CI (which runs on Linux).

.PARAMETER VMName
    The VM.
.PARAMETER PackageDir
    target\driver\<name>_package (from `cargo xtask package`).
.PARAMETER Credential
    Administrator credential in the VM (prompted for when omitted).
#>
param(
    [Parameter(Mandatory = $true)] [string] $VMName,
    [Parameter(Mandatory = $true)] [string] $PackageDir,
    [System.Management.Automation.PSCredential] $Credential = (Get-Credential -Message "Administrator in $VMName")
)
$ErrorActionPreference = 'Stop'

$package = Get-Item $PackageDir
$name = $package.Name -replace '_package$', ''
$sys = Join-Path $package.FullName "$name.sys"
if (-not (Test-Path $sys)) { throw "$sys not found: run cargo xtask package first" }
$service = (Get-Content (Join-Path $package.FullName "$name.inf") |
    Select-String -Pattern '^AddService\s*=\s*(\w+)').Matches[0].Groups[1].Value
$remote = "C:\Temp\$name"

Write-Host "==> copying $($package.FullName) to ${VMName}:$remote"
Enable-VMIntegrationService -VMName $VMName -Name 'Guest Service Interface'
foreach ($file in Get-ChildItem $package.FullName -File) {
    Copy-VMFile -VMName $VMName -SourcePath $file.FullName -DestinationPath (Join-Path $remote $file.Name) `
        -CreateFullPath -FileSource Host -Force
}

Invoke-Command -VMName $VMName -Credential $Credential -ArgumentList $remote, $name, $service -ScriptBlock {
    param($remote, $name, $service)
    $ErrorActionPreference = 'Stop'
    $install = "$remote\Install-$name.ps1"
    if (Test-Path $install) {
        # The package's own install script (cargo ebpf-ext package): the test certificate, the
        # service, and the eBPF store entries under HKLM and this user's HKCU.
        Write-Host "==> tracing with $name.wprp"
        wpr.exe -start "$remote\$name.wprp" -filemode | Out-Host
        Write-Host "==> $install"
        & $install
    } else {
        Write-Host "==> trusting the test certificate"
        Import-Certificate -FilePath "$remote\EbpfExtLocalTestCert.cer" -CertStoreLocation Cert:\LocalMachine\Root | Out-Null
        Import-Certificate -FilePath "$remote\EbpfExtLocalTestCert.cer" -CertStoreLocation Cert:\LocalMachine\TrustedPublisher | Out-Null

        Write-Host "==> tracing with $name.wprp"
        wpr.exe -start "$remote\$name.wprp" -filemode | Out-Host

        Write-Host "==> sc create / start $service"
        sc.exe create $service type= kernel start= demand binpath= "$remote\$name.sys" | Out-Host
        $started = $false
        foreach ($attempt in 1..10) {
            try { Start-Service $service; $started = $true; break } catch { Start-Sleep -Seconds 1 }
        }
        if (-not $started) { sc.exe query $service | Out-Host; throw "$service did not start" }
    }
    sc.exe query $service | Out-Host

    # The service is running: its providers are registered with the eBPF core. Programs for
    # its program type can now be loaded with the eBPF tools (netsh ebpf / bpftool).
    Start-Sleep -Seconds 2

    if (Test-Path $install) {
        Write-Host "==> $install -Uninstall (service and store entries)"
        & $install -Uninstall
    } else {
        Write-Host "==> stop and delete $service"
        Stop-Service $service
        sc.exe delete $service | Out-Host
    }
    wpr.exe -stop "$remote\$name.etl" | Out-Host
}

$log = Join-Path $package.FullName "$name.vm.etl"
Write-Host "==> copying the ETW log ${VMName}:$remote\$name.etl to $log"
$session = New-PSSession -VMName $VMName -Credential $Credential
try {
    Copy-Item -FromSession $session -Path "$remote\$name.etl" -Destination $log -Force
} finally {
    Remove-PSSession $session
}
