//! Renders the two PowerShell scripts (LF line ends; the caller turns them into CRLF).
//!
//! The scripts are written for Windows PowerShell 5.1 as shipped with Windows 10 and 11, and
//! for PowerShell 7: plain ASCII (5.1 reads a file without a byte order mark in the ANSI code
//! page), no `2>&1` on native commands (5.1 turns their stderr into terminating errors under
//! `$ErrorActionPreference = 'Stop'`), and every property read guarded for
//! `Set-StrictMode -Version Latest`. The fixed parts are literal text; the generated lines
//! (one per registry value and per UsbDk rule) are rendered from the same table as the `.reg`
//! file.

use super::{Check, Data, HideRule, Part, Setting, CHECK_SCRIPT};

/// The installer and the checker, built together: the same fixed parts (UsbDk rule test,
/// rule table) and, per part of the table, its title and a line per setting in each.
pub(super) fn scripts(parts: &[Part], rules: &[HideRule]) -> (String, String) {
    let table = rule_table(rules);
    let start = |what: &str| format!("\nWrite-Host 'Airlock terminal guard: {what}'\n");
    let mut install = [INSTALL_HEAD, USBDK_RULE_TEST, INSTALL_FUNCTIONS, &table].concat();
    install.push_str(&start(
        "installing on this TERMINAL (never in a desktop image)",
    ));
    let mut check = [CHECK_HEAD, USBDK_RULE_TEST, CHECK_FUNCTIONS, &table].concat();
    check.push_str(&start("checking this terminal"));
    for part in parts {
        let title = format!("\nWrite-Host {}\n", quote(part.title));
        install.push_str(&title);
        check.push_str(&title);
        for setting in part.settings {
            let path = quote(&ps_path(setting.key));
            let name = quote(setting.name);
            install.push_str(&install_line(setting, &path, &name));
            check.push_str(&check_line(setting, &path, &name));
        }
    }
    install.push_str(INSTALL_USBDK);
    install.push_str(&INSTALL_TAIL.replace("@CHECK_SCRIPT@", CHECK_SCRIPT));
    check.push_str(CHECK_TAIL);
    (install, check)
}

/// The installer's line for `setting` (`path` and `name` quoted).
fn install_line(setting: &Setting, path: &str, name: &str) -> String {
    match setting.data {
        Data::Dword(v) => format!("Set-AirlockDword -Path {path} -Name {name} -Value {v}\n"),
        Data::ListEntry(s) => format!(
            "Add-AirlockListEntry -Path {path} -Name {name} -Value {}\n",
            quote(s)
        ),
    }
}

/// The checker's line for `setting` (`path` and `name` quoted).
fn check_line(setting: &Setting, path: &str, name: &str) -> String {
    match setting.data {
        Data::Dword(v) => {
            let (mode, note) = match setting.check {
                Check::Required => ("Required", ""),
                Check::OrAbsent(note) => ("OrAbsent", note),
                Check::Info(note) => ("Info", note),
            };
            format!(
                "Test-AirlockDword -Path {path} -Name {name} -Expected {v} -Mode {} -Note {}\n",
                quote(mode),
                quote(note)
            )
        }
        Data::ListEntry(s) => format!(
            "Test-AirlockListEntry -Path {path} -Value {} -What {}\n",
            quote(s),
            quote(setting.what)
        ),
    }
}

/// A registry key below `HKEY_LOCAL_MACHINE` as a PowerShell registry provider path.
fn ps_path(key: &str) -> String {
    format!("HKLM:\\{key}")
}

/// A single-quoted PowerShell string (no expansion; `'` doubled).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `$usbDkRules`: each rule's UsbDkController arguments and the DWORDs UsbDk stores it as
/// (`-1`, any, is stored as 0xFFFFFFFF, which PowerShell reads back as -1).
fn rule_table(rules: &[HideRule]) -> String {
    fn dword(v: Option<u32>) -> String {
        v.map_or_else(|| "-1".to_owned(), |v| format!("0x{v:04x}"))
    }
    fn mask(v: Option<u32>) -> String {
        v.map_or_else(|| "-1".to_owned(), |v| format!("0x{v:x}"))
    }
    let mut out = String::from(
        "\n# The UsbDk persistent hide rules: UsbDkController arguments (fields in hex, -1 = any,\n\
         # hide = 1) and the DWORDs UsbDk stores the rule as in the registry.\n\
         $usbDkRules = @(\n",
    );
    for rule in rules {
        out.push_str(&format!(
            "    @{{ Command = {}; About = {}; Type = {}; ShouldHide = 1; VID = {}; PID = {}; BCD = {}; Class = {} }}\n",
            quote(&rule.command()),
            quote(&rule.about()),
            rule.kind as u8,
            dword(rule.vid.map(u32::from)),
            dword(rule.pid.map(u32::from)),
            dword(rule.bcd.map(u32::from)),
            mask(rule.class),
        ));
    }
    out.push_str(")\n");
    out
}

const INSTALL_HEAD: &str = r#"#Requires -RunAsAdministrator
<#
.SYNOPSIS
    Airlock terminal guard: Windows never gets a local driver for the terminal's USB optical
    drive, while the drive can still be forwarded at USB level into the remote desktop.

.DESCRIPTION
    Generated by `airlock guard windows-policy`. Run it on the TERMINAL ONLY, never in the
    disposable desktop image: Microsoft documents that the Device Installation Restriction
    policies also act on devices redirected into a remote desktop, so there the same CD-ROM
    deny would block the very drive the terminal forwards.

    1. Device Installation Restrictions: deny the CD-ROM device setup class, also for devices
       already installed, with no administrator override.
    2. RemoteFX USB redirection client policy (needed on RDP sites only).
    3. UsbDk persistent hide rules, when UsbDkController.exe is found (SPICE sites: the
       drive stays hidden from Windows drivers while UsbDk hands it to virt-viewer or
       remote-viewer). Persistent rules hold from boot on; the rules the viewer sets itself
       exist only while it runs.

    Prints every change. Then check the terminal with Check-AirlockGuard.ps1.

.PARAMETER UsbDkController
    Path of UsbDkController.exe. When there is no such file the UsbDk step is skipped.
#>
[CmdletBinding()]
param(
    [string]$UsbDkController = "$env:ProgramFiles\UsbDk Runtime Library\UsbDkController.exe"
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$script:Changes = New-Object -TypeName 'System.Collections.Generic.List[string]'
$script:Failures = New-Object -TypeName 'System.Collections.Generic.List[string]'
$script:RebootNeeded = $false
"#;

const USBDK_RULE_TEST: &str = r#"
# True when UsbDk holds a persistent hide rule with exactly these fields. UsbDk keeps each one
# as a subkey of HideRules with the DWORD values Type, ShouldHide, VID, PID, BCD and Class.
function Test-AirlockUsbDkRule {
    param([hashtable]$Rule)
    $rulesKey = 'HKLM:\SYSTEM\CurrentControlSet\Services\UsbDk\Parameters\HideRules'
    if (-not (Test-Path -LiteralPath $rulesKey)) {
        return $false
    }
    foreach ($ruleKey in @(Get-ChildItem -LiteralPath $rulesKey)) {
        $values = Get-ItemProperty -LiteralPath $ruleKey.PSPath -ErrorAction SilentlyContinue
        if ($null -eq $values) {
            continue
        }
        $same = $true
        foreach ($field in @('Type', 'ShouldHide', 'VID', 'PID', 'BCD', 'Class')) {
            $property = $values.PSObject.Properties[$field]
            if ($null -eq $property -or [int64]$property.Value -ne [int64]$Rule[$field]) {
                $same = $false
            }
        }
        if ($same) {
            return $true
        }
    }
    return $false
}
"#;

const INSTALL_FUNCTIONS: &str = r#"
function Write-AirlockChange {
    param([string]$Text)
    $script:Changes.Add($Text)
    Write-Host "  changed: $Text"
}

function New-AirlockKey {
    param([string]$Path)
    if (-not (Test-Path -LiteralPath $Path)) {
        New-Item -Path $Path -Force | Out-Null
        Write-AirlockChange "created key $Path"
    }
}

# Sets a REG_DWORD, unless it already holds that number.
function Set-AirlockDword {
    param([string]$Path, [string]$Name, [int]$Value)
    New-AirlockKey -Path $Path
    $item = Get-ItemProperty -LiteralPath $Path -Name $Name -ErrorAction SilentlyContinue
    if ($null -ne $item) {
        $current = $item.$Name
        if ($current -is [int] -and $current -eq $Value) {
            Write-Host "  unchanged: $Path\$Name = $Value"
            return
        }
    }
    New-ItemProperty -LiteralPath $Path -Name $Name -PropertyType DWord -Value $Value -Force | Out-Null
    Write-AirlockChange "$Path\$Name = $Value (DWord)"
}

# Puts a REG_SZ entry into a list key, where Windows reads every value whatever its name. An
# entry already listed under any name is left alone; entries of other policies are kept, and
# when the preferred name is taken the next free number is used.
function Add-AirlockListEntry {
    param([string]$Path, [string]$Name, [string]$Value)
    New-AirlockKey -Path $Path
    $key = Get-Item -LiteralPath $Path
    $names = @($key.GetValueNames())
    foreach ($existing in $names) {
        if ([string]$key.GetValue($existing) -eq $Value) {
            Write-Host "  unchanged: $Path lists $Value (value '$existing')"
            return
        }
    }
    $free = $Name
    $number = 1
    while ($names -contains $free) {
        $free = [string]$number
        $number++
    }
    New-ItemProperty -LiteralPath $Path -Name $free -PropertyType String -Value $Value -Force | Out-Null
    Write-AirlockChange "$Path\$free = $Value (String)"
}

# Adds one persistent hide rule with UsbDkController, unless UsbDk already holds it (the tool
# refuses a rule that exists). UsbDkController parses every field as hex; for a field it cannot
# parse it prints "Invalid value for field ..." and still carries on, and a rule it refuses to
# parse ends with exit code 0. So the rules are generated and validated here, the tool's output
# is searched for "Invalid" and "failed", and the rule must be in the registry afterwards.
function Add-AirlockUsbDkRule {
    param([hashtable]$Rule)
    $command = [string]$Rule['Command']
    $about = [string]$Rule['About']
    if ($command -cnotmatch '^-P [01]( (-1|[0-9a-f]{1,8})){4} 1$') {
        throw "refusing a malformed UsbDk rule: $command"
    }
    if (Test-AirlockUsbDkRule -Rule $Rule) {
        Write-Host "  unchanged: UsbDk hide rule for $about ($command)"
        return
    }
    $arguments = $command -split ' '
    Write-Host "  running: $UsbDkController $command"
    $output = & $UsbDkController @arguments | Out-String
    $code = $LASTEXITCODE
    foreach ($line in ($output -split "`r?`n")) {
        if ($line.Trim().Length -gt 0) {
            Write-Host "    $line"
        }
    }
    if ($output -match 'Invalid|failed') {
        $script:Failures.Add("UsbDk hide rule for $about ($command): UsbDkController reported an error")
        return
    }
    if ($code -eq 2) {
        $script:RebootNeeded = $true
    } elseif ($code -ne 0) {
        $script:Failures.Add("UsbDk hide rule for $about ($command): UsbDkController exit code $code")
        return
    }
    if (-not (Test-AirlockUsbDkRule -Rule $Rule)) {
        $script:Failures.Add("UsbDk hide rule for $about ($command): not in the registry afterwards")
        return
    }
    Write-AirlockChange "UsbDk hide rule for $about ($command)"
}
"#;

const INSTALL_USBDK: &str = r#"
Write-Host 'UsbDk persistent hide rules (SPICE sites)'
if (Test-Path -LiteralPath $UsbDkController -PathType Leaf) {
    foreach ($rule in $usbDkRules) {
        Add-AirlockUsbDkRule -Rule $rule
    }
} else {
    Write-Host "  skipped: no $UsbDkController"
    Write-Host '  The UsbDk rules are needed on SPICE sites only (virt-viewer or remote-viewer with UsbDk).'
    Write-Host '  There, install UsbDk and run this script again, or pass -UsbDkController with its path.'
}
"#;

const INSTALL_TAIL: &str = r#"
Write-Host ''
if ($script:Changes.Count -eq 0) {
    Write-Host 'Nothing changed: every setting was already in place.'
} else {
    Write-Host ('{0} change(s):' -f $script:Changes.Count)
    foreach ($change in $script:Changes) {
        Write-Host "  $change"
    }
}
Write-Host 'A reboot (or gpupdate /force, then unplugging and replugging the drive) may be needed'
Write-Host 'before Windows removes a driver already installed for a CD-ROM drive.'
if ($script:RebootNeeded) {
    Write-Host 'UsbDk: a reboot is needed before the new hide rules take effect.'
}
Write-Host 'Then run @CHECK_SCRIPT@.'
if ($script:Failures.Count -gt 0) {
    foreach ($failure in $script:Failures) {
        Write-Host "FAILED: $failure"
    }
    exit 1
}
exit 0
"#;

const CHECK_HEAD: &str = r#"<#
.SYNOPSIS
    Airlock terminal guard: checks that Windows cannot give the terminal's USB optical drive
    a local driver.

.DESCRIPTION
    Generated by `airlock guard windows-policy`. Reads every setting Install-AirlockGuard.ps1
    makes back from the registry and prints one line per check (OK, FAIL or INFO), then
    "guarded" (exit code 0) or "not guarded" (exit code 1). Needs no administrator rights.
    INFO lines are reported only: the RemoteFX setting matters on RDP sites only.
#>
[CmdletBinding()]
param()

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$script:FailCount = 0
"#;

const CHECK_FUNCTIONS: &str = r#"
function Write-AirlockCheck {
    param([string]$Status, [string]$Name, [string]$Detail)
    Write-Host ('{0} {1}: {2}' -f $Status, $Name, $Detail)
    if ($Status -eq 'FAIL') {
        $script:FailCount++
    }
}

# The data of a value, or $null when the key or the value is missing.
function Get-AirlockValue {
    param([string]$Path, [string]$Name)
    if (-not (Test-Path -LiteralPath $Path)) {
        return $null
    }
    $item = Get-ItemProperty -LiteralPath $Path -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $item) {
        return $null
    }
    return $item.$Name
}

# Mode: Required (must be Expected), OrAbsent (Expected or not set), Info (reported only).
function Test-AirlockDword {
    param([string]$Path, [string]$Name, [int]$Expected, [string]$Mode, [string]$Note)
    $value = Get-AirlockValue -Path $Path -Name $Name
    if ($null -eq $value) {
        if ($Mode -eq 'OrAbsent') {
            Write-AirlockCheck 'OK' $Name "not set ($Note)"
        } elseif ($Mode -eq 'Info') {
            Write-AirlockCheck 'INFO' $Name "not set, wanted $Expected ($Note)"
        } else {
            Write-AirlockCheck 'FAIL' $Name "not set in $Path, wanted $Expected"
        }
        return
    }
    if ($value -is [int] -and $value -eq $Expected) {
        Write-AirlockCheck 'OK' $Name "$value"
        return
    }
    $detail = 'is {0} ({1}), wanted DWord {2}' -f $value, $value.GetType().Name, $Expected
    if ($Mode -eq 'Info') {
        Write-AirlockCheck 'INFO' $Name "$detail ($Note)"
    } else {
        Write-AirlockCheck 'FAIL' $Name $detail
    }
}

# A list key holds Value under any value name.
function Test-AirlockListEntry {
    param([string]$Path, [string]$Value, [string]$What)
    $label = Split-Path -Leaf $Path
    if (-not (Test-Path -LiteralPath $Path)) {
        Write-AirlockCheck 'FAIL' $label "no key $Path, so $What is not listed"
        return
    }
    $key = Get-Item -LiteralPath $Path
    foreach ($name in @($key.GetValueNames())) {
        if ([string]$key.GetValue($name) -eq $Value) {
            Write-AirlockCheck 'OK' $label "$Value listed as value '$name' ($What)"
            return
        }
    }
    Write-AirlockCheck 'FAIL' $label "$Value ($What) is not listed in $Path"
}
"#;

const CHECK_TAIL: &str = r#"
Write-Host ''
Write-Host 'UsbDk persistent hide rules (SPICE sites)'
if (Test-Path -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Services\UsbDk') {
    foreach ($rule in $usbDkRules) {
        $name = 'UsbDk hide rule for {0}' -f $rule['About']
        if (Test-AirlockUsbDkRule -Rule $rule) {
            Write-AirlockCheck 'OK' $name $rule['Command']
        } else {
            Write-AirlockCheck 'FAIL' $name ('{0} is missing: run Install-AirlockGuard.ps1' -f $rule['Command'])
        }
    }
} else {
    Write-AirlockCheck 'INFO' 'UsbDk' 'not installed: no hide rules to check (needed on SPICE sites only)'
}

Write-Host ''
Write-Host 'CD-ROM devices'
if (Get-Command -Name 'Get-PnpDevice' -ErrorAction SilentlyContinue) {
    $served = @(Get-PnpDevice -Class CDROM -PresentOnly -ErrorAction SilentlyContinue | Where-Object { $_.Status -eq 'OK' })
    if ($served.Count -eq 0) {
        Write-AirlockCheck 'OK' 'CD-ROM devices' 'no present CD-ROM device is served by a local driver'
    } else {
        foreach ($device in $served) {
            $detail = '{0} [{1}] is present with status OK: a local driver serves it (unplug and replug it, or reboot)' -f $device.FriendlyName, $device.InstanceId
            Write-AirlockCheck 'FAIL' 'CD-ROM device' $detail
        }
    }
} else {
    Write-AirlockCheck 'INFO' 'CD-ROM devices' 'Get-PnpDevice is not available: present devices not checked'
}

Write-Host ''
if ($script:FailCount -eq 0) {
    Write-Host 'guarded'
    exit 0
}
Write-Host 'not guarded'
exit 1
"#;
